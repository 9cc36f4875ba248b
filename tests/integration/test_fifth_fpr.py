"""A fifth FPR joins the running pipeline through configuration alone: no change to the mixer or other FPRs."""

from __future__ import annotations

import pytest

from feedrank.settings import REPO_ROOT
from services.demo import full_feeds
from services.feed_client import FeedClient
from services.supervisor import pipeline_services
from services.traffic import SimulatedTraffic
from services.traffic_service import publish_traffic

from .conftest import running_services

pytestmark = pytest.mark.integration

FIFTH = """
[fprs.trending]
factory = "rankers.network.ranker:build"
serves = "post"
k = 5
"""


def test_fifth_fpr_is_served_and_mixed_by_configuration_only(base_settings, tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text((REPO_ROOT / "config" / "pipeline.toml").read_text() + FIFTH)
    generator = SimulatedTraffic(members=200, requests=200, seed=8)
    with running_services(base_settings, tmp_path, generator, pipeline_config=config) as (s, sup):
        assert "fpr-trending" in pipeline_services(s)
        publish_traffic(s, generator, show_progress=False)
        client = FeedClient(s)
        try:
            expected = {"network", "jobs", "courses", "people", "trending"}
            feeds = full_feeds(client, sup, [f"m{i}" for i in range(generator.members)], expected - {"trending"}, 1)
            assert feeds, f"no complete feed; logs in {s.log_dir}"
            feed = client.feed(feeds[0].member_id, timeout_s=30)
            # the mixer waited for and used the new source like any other
            assert set(feed.sources_answered) == expected and not feed.sources_missing
        finally:
            client.close()
