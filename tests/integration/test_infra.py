import subprocess
import sys

from feedrank import infra


def test_infra_up_is_idempotent_and_status_reports_both(base_settings):
    again = infra.up(base_settings)
    assert {c.name for c in again} == {"kafka", "redis"} and all(c.reachable for c in again)
    out = subprocess.run(
        [sys.executable, "-m", "feedrank.cli", "infra", "status"],
        capture_output=True,
        text=True,
        env=base_settings.child_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "kafka  up" in out.stdout and "redis  up" in out.stdout
