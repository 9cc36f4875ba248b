import faulthandler
import os
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"
CRASH_LOG = Path(os.environ.get("FEEDRANK_CRASH_LOG", Path(__file__).parent.parent / ".feedrank" / "pytest-crash.log"))


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Send faulthandler's tracebacks to a file: pytest's fd capture would swallow them with the process.

    Runs after pytest's own faulthandler set-up, so this target wins; `.ci/run` prints the file after a crash.
    """
    CRASH_LOG.parent.mkdir(parents=True, exist_ok=True)
    config._feedrank_crash_log = CRASH_LOG.open("w")
    faulthandler.enable(file=config._feedrank_crash_log, all_threads=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_DIR in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
