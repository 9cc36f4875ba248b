"""The people team's settings: ``config.toml`` next to this file (see ``rankers/team_settings.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankers.team_settings import Sections, TeamSettings

CONFIG_PATH = Path(__file__).with_name("config.toml")
TEAM = TeamSettings("people", CONFIG_PATH)
Settings = Sections


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    return TEAM.load(overrides)
