"""Each FPR team's own settings: a ``config.toml`` in its folder, overridden by build/train params.

One loader for every team, so that ``feedrank train fpr NAME --param KEY=VALUE``, a table in
``config/pipeline.toml`` and a test's params mean the same thing for every FPR. An override may be a
section table (``ncf={"epochs": 4}``), dotted (``"ncf.epochs"``), section-prefixed (``ncf_epochs``), or
a bare key that one section holds (``epochs``). A typo is an error, never silently ignored.
"""

from __future__ import annotations

import copy
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

Sections = dict[str, dict[str, Any]]


class UnknownSetting(TypeError, KeyError, ValueError):
    """An override no section holds, or one several hold; a TypeError so the registry reports it as a
    configuration error of that FPR."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@cache
def _defaults(path: Path) -> Sections:
    with path.open("rb") as f:
        return tomllib.load(f)


class TeamSettings:
    def __init__(self, team: str, path: Path) -> None:
        self.team = team
        self.path = path

    def defaults(self) -> Sections:
        return copy.deepcopy(_defaults(self.path))

    def load(self, overrides: dict[str, Any] | None = None, strict: bool = True) -> Sections:
        """The file's sections with ``overrides`` applied (a fresh copy each call).

        ``strict=False`` applies a bare key to every section holding it and skips keys none holds (for a
        caller that reads one section of a params dict shared by several)."""
        cfg = self.defaults()
        for key, value in (overrides or {}).items():
            if key in cfg and isinstance(value, dict):
                for sub, v in value.items():
                    self._set(cfg, key, sub, v, strict)
                continue
            section, sep, sub = key.partition(".")
            if not sep:
                section, _, sub = key.partition("_")
            if section in cfg and sub in cfg[section]:
                cfg[section][sub] = value
                continue
            owners = [name for name, table in cfg.items() if isinstance(table, dict) and key in table]
            if len(owners) == 1 or (owners and not strict):
                for owner in owners:
                    cfg[owner][key] = value
            elif owners:
                raise UnknownSetting(f"{self.team} setting {key!r} is ambiguous: prefix it with one of {owners}")
            elif strict:
                raise UnknownSetting(f"unknown {self.team} setting {key!r}; sections: {sorted(cfg)}")
        return cfg

    def section(self, name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.load(overrides, strict=False).get(name, {})

    def flat(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every setting under its bare name, for a team whose keys are unique across sections."""
        out: dict[str, Any] = {}
        for table, values in self.load(overrides).items():
            items = values.items() if isinstance(values, dict) else [(table, values)]
            for key, value in items:
                if key in out:
                    raise UnknownSetting(f"{self.path}: key {key!r} appears in more than one table")
                out[key] = value
        return out

    def _set(self, cfg: Sections, section: str, key: str, value: Any, strict: bool) -> None:
        if key not in cfg[section]:
            if strict:
                raise UnknownSetting(f"unknown {self.team} setting {section}.{key}; known: {sorted(cfg[section])}")
            return
        cfg[section][key] = value
