"""The network team's settings: ``config.toml`` next to this file (see ``rankers/team_settings.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankers.team_settings import TeamSettings

CONFIG_PATH = Path(__file__).with_name("config.toml")
TEAM = TeamSettings("network", CONFIG_PATH)


def section(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One section: a flat key applies to every section that has it (``max_age_hours`` reaches both the
    source and the cold-start list); keys for other sections are left to them."""
    return TEAM.section(name, params)
