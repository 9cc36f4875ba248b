"""The jobs team's settings: ``config.toml`` next to this file (see ``rankers/team_settings.py``).

Tables in the file only group keys for readers; keys are unique, so a param names one setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rankers.team_settings import TeamSettings

CONFIG_PATH = Path(__file__).with_name("config.toml")
TEAM = TeamSettings("jobs", CONFIG_PATH)


def settings(params: dict[str, Any] | None = None) -> dict[str, Any]:
    return TEAM.flat(params)
