"""Builds the configured FPRs and re-ranking rules from ``config/pipeline.toml``.

The mixer only ever sees the names and objects this returns, so a new FPR or rule is configuration.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedrank.contracts import ItemType
from rankers.fpr import FirstPassRanker
from rankers.rules.base import RerankRule


class ConfigError(ValueError):
    """The pipeline configuration is wrong; the message names the entry and key."""


@dataclass(frozen=True)
class FprSpec:
    """One FPR as the pipeline sees it; everything else about it lives in its team's folder.

    ``factory`` builds the ranker (given the trained scorer as ``model`` when there is one), ``trainer``
    fits that scorer from logged traffic, ``baseline`` is the simple scorer it must beat, ``offline`` is
    the model ``feedrank fpr evaluate`` fits on an interaction (or edge) file, and ``model`` names the
    versioned artifact (``fpr-NAME`` by default).
    """

    name: str
    factory: str
    serves: ItemType
    k: int
    params: dict[str, Any] = field(default_factory=dict)
    trainer: str | None = None
    baseline: str | None = None
    offline: str | None = None
    model: str | None = None

    @property
    def artifact(self) -> str:
        return self.model or f"fpr-{self.name}"

    def build(self, model: Any | None = None) -> FirstPassRanker:
        fn = _resolve(self.factory, f"fprs.{self.name}.factory")
        extra = {"model": model} if model is not None else {}
        try:
            return fn(name=self.name, k=self.k, **extra, **self.params)
        except TypeError as err:
            raise ConfigError(f"fprs.{self.name}: {err}") from None

    def _need(self, key: str) -> str:
        ref = getattr(self, key)
        if ref is None:
            raise ConfigError(f"fprs.{self.name} declares no {key!r}")
        return ref

    def resolve_trainer(self) -> Any:
        return _resolve(self._need("trainer"), f"fprs.{self.name}.trainer")

    def build_baseline(self) -> Any:
        return _resolve(self._need("baseline"), f"fprs.{self.name}.baseline")()

    def build_offline(self) -> Any:
        return _resolve(self._need("offline"), f"fprs.{self.name}.offline")()


@dataclass(frozen=True)
class RuleSpec:
    rule: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> RerankRule:
        cls = _resolve(self.rule, "rerank.rule")
        try:
            return cls(**self.params)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"rerank rule {self.rule}: {err}") from None


@dataclass(frozen=True)
class PipelineConfig:
    fprs: dict[str, FprSpec]
    rules: list[RuleSpec]

    @property
    def fpr_names(self) -> list[str]:
        return sorted(self.fprs)

    @property
    def source_of_type(self) -> dict[ItemType, str]:
        """The FPR serving each item type: the source credited for an impression logged without one."""
        return {spec.serves: name for name, spec in self.fprs.items()}

    def fpr(self, name: str) -> FprSpec:
        if name not in self.fprs:
            raise ConfigError(f"unknown FPR {name!r}; configured: {', '.join(self.fpr_names)}")
        return self.fprs[name]

    def build_rules(self) -> list[RerankRule]:
        return [r.build() for r in self.rules]

    def with_rules(self, overrides: Mapping[str, Mapping[str, Any] | bool]) -> PipelineConfig:
        """This pipeline with some rules' parameters changed or rules dropped, for comparing rule settings
        on the same trained models. Keys name a configured rule by its reference
        (``rankers.rules.quota:InventoryQuota``) or its class (``InventoryQuota``); a table's keys replace
        that rule's parameters, ``false`` drops the rule and ``true`` keeps it as it is."""
        by_key = {}
        for i, spec in enumerate(self.rules):
            for key in (spec.rule, spec.rule.rpartition(":")[2]):
                by_key.setdefault(key, []).append(i)
        changes: dict[int, Mapping[str, Any] | bool] = {}
        for key, change in overrides.items():
            at = by_key.get(key)
            if at is None:
                configured = ", ".join(spec.rule.rpartition(":")[2] for spec in self.rules)
                raise ConfigError(f"rule override {key!r} names no configured rule; configured: {configured}")
            if len(at) > 1:
                raise ConfigError(f"rule override {key!r} names {len(at)} configured rules; it must name one")
            if not isinstance(change, bool | Mapping):
                raise ConfigError(f"rule override {key!r} must be a table of parameters or false, got {change!r}")
            changes[at[0]] = change
        rules = []
        for i, spec in enumerate(self.rules):
            change = changes.get(i, True)
            if change is False:
                continue
            if change is not True:
                spec = RuleSpec(spec.rule, {**spec.params, **change})
                spec.build()  # a misspelt or invalid parameter fails here, naming the rule
            rules.append(spec)
        return PipelineConfig(self.fprs, rules)


def _resolve(ref: str, where: str) -> Any:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"{where}={ref!r} must look like 'package.module:callable'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}={ref!r} cannot be imported: {err}") from None


def parse_config(data: dict[str, Any]) -> PipelineConfig:
    fprs: dict[str, FprSpec] = {}
    for name, table in (data.get("fprs") or {}).items():
        table = dict(table)
        try:
            factory = table.pop("factory")
            serves = ItemType(table.pop("serves"))
        except KeyError as err:
            raise ConfigError(f"fprs.{name} is missing {err.args[0]!r}") from None
        except ValueError:
            raise ConfigError(f"fprs.{name}.serves must be one of {[t.value for t in ItemType]}") from None
        k = table.pop("k", 50)
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"fprs.{name}.k must be a positive integer, got {k!r}")
        refs = {key: table.pop(key, None) for key in ("trainer", "baseline", "offline", "model")}
        for key, ref in refs.items():
            if ref is not None and not isinstance(ref, str):
                raise ConfigError(f"fprs.{name}.{key} must be a string, got {ref!r}")
        fprs[name] = FprSpec(name, factory, serves, k, table, **refs)
    if not fprs:
        raise ConfigError("pipeline config declares no [fprs.*] entry")
    rules = []
    for i, table in enumerate(data.get("rerank") or []):
        table = dict(table)
        if "rule" not in table:
            raise ConfigError(f"rerank[{i}] is missing 'rule'")
        rules.append(RuleSpec(table.pop("rule"), table))
    return PipelineConfig(fprs, rules)


def load_config(path: Path) -> PipelineConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"pipeline config {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"pipeline config {path}: {err}") from None
    return parse_config(data)
