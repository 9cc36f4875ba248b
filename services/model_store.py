"""Versioned model artifacts on disk: ``models/NAME/VERSION/{model.joblib,meta.json}`` and a CURRENT pointer."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    model: Any
    meta: dict[str, Any]


class ModelNotFound(FileNotFoundError):
    """No artifact of that name has been trained yet."""


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, name: str, model: Any, meta: dict[str, Any]) -> str:
        version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000:06d}"
        folder = self.root / name / version
        folder.mkdir(parents=True, exist_ok=False)
        joblib.dump(model, folder / "model.joblib")
        (folder / "meta.json").write_text(json.dumps({**meta, "name": name, "version": version}, indent=2))
        tmp = self.root / name / "CURRENT.tmp"
        tmp.write_text(version)
        tmp.replace(self.root / name / "CURRENT")  # atomic: readers never see a half-written pointer
        return version

    def exists(self, name: str) -> bool:
        """Whether ``name`` has a current version, without unpickling it."""
        version = self.current(name)
        return version is not None and (self.root / name / version / "model.joblib").exists()

    def versions(self, name: str) -> list[str]:
        """Saved versions of ``name``, oldest first (a version's name starts with its UTC save time)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "model.joblib").exists())

    def current(self, name: str) -> str | None:
        """The version ``CURRENT`` points at, or None before the first save."""
        pointer = self.root / name / "CURRENT"
        return pointer.read_text().strip() if pointer.exists() else None

    def load(self, name: str, version: str | None = None) -> Artifact:
        if version is None:
            version = self.current(name)
            if version is None:
                raise ModelNotFound(f"no {name!r} model under {self.root}; train one with `feedrank train {name}`")
        folder = self.root / name / version
        if not (folder / "model.joblib").exists():
            raise ModelNotFound(f"{name!r} model version {version!r} not found under {self.root / name}")
        meta = json.loads((folder / "meta.json").read_text())
        return Artifact(name, version, joblib.load(folder / "model.joblib"), meta)


def load_spr(store: ModelStore, columns: list[str], version: str | None = None) -> Artifact:
    """The second-pass model (the current one unless ``version``), refusing one trained on other input
    columns (an older schema)."""
    artifact = store.load("spr", version)
    if artifact.meta.get("columns") != columns:
        raise ModelNotFound(
            f"model spr/{artifact.version} was trained on other features than this code computes; "
            "retrain it with `feedrank train spr`"
        )
    return artifact
