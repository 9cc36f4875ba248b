from feedrank import infra

from .conftest import feedrank_cli


def test_infra_up_is_idempotent_and_status_reports_both(base_settings):
    again = infra.up(base_settings)
    assert {c.name for c in again} == {"kafka", "redis"} and all(c.reachable for c in again)
    out = feedrank_cli(base_settings, "infra", "status")
    assert out.returncode == 0, out.stderr
    assert "kafka  up" in out.stdout and "redis  up" in out.stdout
