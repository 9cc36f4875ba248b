"""A ranker configuration as a policy table (evaluation/ranker_policy.py), on a tiny simulated world
written to files, with the FPRs' baselines and two saved SPR versions: one trained, one with its
coefficients negated (it ranks the other way round)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evaluation.ranker_policy import (
    RankerPolicyError,
    ServedInventory,
    UnknownMembersWarning,
    parse_spec,
    policy_table,
    ranker_policy_table,
)
from feedrank.contracts import MemberEvent
from feedrank.settings import Settings
from rankers.registry import load_config
from rankers.rules.base import RerankContext, Slot
from rankers.rules.exploration import Exploration
from services.fpr_service import load_ranker
from services.fpr_training import load_traffic
from services.model_store import ModelStore
from services.train_spr import train_spr
from simulator.config import SessionConfig, WorldConfig
from simulator.logs import read_log
from simulator.run import simulate_to_files

N_REQUESTS = 25  # logged requests rerun (the last ones of the log: the replay folds the whole world)


@dataclass
class World:
    data: Path
    settings: Settings
    log: pd.DataFrame  # the logged rows of the N_REQUESTS requests rerun
    events: list[MemberEvent]
    trained: str  # the trained SPR version
    flipped: str  # its coefficients negated; the current version
    created: dict[str, float]  # item id -> creation time (member cards: none)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("ranker-policy")
    data = root / "data"
    simulate_to_files(
        WorldConfig.build("world", seed=4, n_members=150, n_companies=10, n_courses=20, horizon_days=3.0),
        SessionConfig.build("sessions", seed=4, n_requests=1200),
        data,
        show_progress=False,
    )
    settings = Settings(models_path=root / "models", state_dir=root / "state")
    traffic = load_traffic(data)
    trained, _ = train_spr(settings, traffic.events, "test world")
    store = ModelStore(settings.model_dir)
    artifact = store.load("spr", trained)
    artifact.model.pipeline_.named_steps["lr"].coef_ *= -1.0
    flipped = store.save("spr", artifact.model, artifact.meta)
    log = read_log(data / "impressions.parquet")
    last = log["request_id"].drop_duplicates().iloc[-N_REQUESTS:]
    items = pq.read_table(data / "items.parquet").to_pandas()
    created = dict(zip(items["item_id"], items["created"], strict=True))
    return World(data, settings, log[log["request_id"].isin(last)], list(traffic.events), trained, flipped, created)


@pytest.fixture(scope="module")
def tables(world: World) -> dict[str, pd.DataFrame]:
    """The deterministic tables of both versions, of the current one, and of the trained one again."""

    def run(spec: str) -> pd.DataFrame:
        return ranker_policy_table(world.log, spec, world.data, world.settings, show_progress=False)

    return {
        "trained": run(f"spr/{world.trained}"),
        "flipped": run(f"spr/{world.flipped}"),
        "current": run("spr"),
        "again": run(f"spr/{world.trained}"),
    }


def test_one_row_per_request_and_position_with_probability_one(world: World, tables: dict[str, pd.DataFrame]):
    table = tables["trained"]
    assert list(table.columns) == ["request_id", "position", "item_id", "probability"]
    assert table["position"].dtype == "int64" and table["probability"].dtype == "float64"
    assert (table["probability"] == 1.0).all()
    assert not table.duplicated(["request_id", "position"]).any()
    attrs = table.attrs
    assert attrs["policy"] == f"spr/{world.trained}" and attrs["explore"] is False and attrs["position_base"] == 0
    assert (
        attrs["requests"] == N_REQUESTS == attrs["requests_with_rows"] + attrs["unknown_members"] + attrs["empty_feeds"]
    )
    assert attrs["requests_with_rows"] >= N_REQUESTS - 2 and 0.0 <= attrs["exact_coverage"] <= attrs["coverage"] <= 1.0
    assert set(attrs["fpr_versions"]) == set(load_config(world.settings.pipeline_config).fprs)
    logged = world.log.groupby("request_id").agg(member=("member_id", "first"), t=("timestamp", "min"))
    slate = world.log.groupby("request_id")["position"].max() + 1
    for rid, feed in table.groupby("request_id"):
        # the feed fills the logged slate's positions from the top, each item once
        assert feed["position"].tolist() == list(range(len(feed))) and len(feed) <= slate[rid]
        assert feed["item_id"].is_unique
        member, t = logged.loc[rid, "member"], logged.loc[rid, "t"]
        for item in feed["item_id"]:
            # a real item of the world, created before the request (or a member card), never the member
            assert item in world.created and item != member
            assert item.startswith("m") or world.created[item] <= t


def test_the_log_position_convention_is_kept(world: World, tables: dict[str, pd.DataFrame]):
    one_based = world.log.assign(position=world.log["position"] + 1)
    table = policy_table(one_based, world.events, *_system(world, world.trained))
    assert table.attrs["position_base"] == 1
    expected = tables["trained"].assign(position=tables["trained"]["position"] + 1)
    pd.testing.assert_frame_equal(table, expected)
    # said explicitly, a 0-based log read as 1-based is shifted the other way (position 0 never shown)
    forced = policy_table(one_based, world.events, *_system(world, world.trained), position_base=0)
    assert forced["position"].min() == 0


def test_versions_are_chosen_by_the_spec_and_give_different_feeds(world: World, tables: dict[str, pd.DataFrame]):
    trained, flipped = tables["trained"], tables["flipped"]
    assert trained.attrs["spr_version"] == world.trained and flipped.attrs["spr_version"] == world.flipped
    # "spr" is the current version: the latest saved
    assert tables["current"].attrs["spr_version"] == world.flipped
    pd.testing.assert_frame_equal(tables["current"], flipped)
    merged = trained.merge(flipped, on=["request_id", "position"], how="outer", suffixes=("_a", "_b"))
    differs = (merged["item_id_a"] != merged["item_id_b"]).mean()
    assert differs > 0.5, f"only {differs:.0%} of slots differ between a model and its negation"
    assert set(ModelStore(world.settings.model_dir).versions("spr")) == {world.trained, world.flipped}


def test_same_input_gives_the_same_table(tables: dict[str, pd.DataFrame]):
    pd.testing.assert_frame_equal(tables["trained"], tables["again"])


def test_unknown_specs_and_versions_are_clear_errors(world: World, tmp_path: Path):
    for bad in ("fpr-jobs", "spr/", "spr/a/b", "SPR", ""):
        with pytest.raises(RankerPolicyError, match="expected 'spr'"):
            parse_spec(bad)
    assert parse_spec("spr").version is None and parse_spec(f"spr/{world.trained}").version == world.trained
    with pytest.raises(RankerPolicyError, match="does not exist") as err:
        ranker_policy_table(world.log, "spr/v1999", world.data, world.settings, show_progress=False)
    assert world.trained in str(err.value) and f"{world.flipped} (current)" in str(err.value)
    empty = Settings(models_path=tmp_path / "models", state_dir=tmp_path / "state")
    with pytest.raises(RankerPolicyError, match=r"no SPR model under .*feedrank train spr"):
        ranker_policy_table(world.log, "spr", world.data, empty, show_progress=False)
    with pytest.raises(RankerPolicyError, match=r"events\.parquet"):
        ranker_policy_table(world.log, "spr", tmp_path, world.settings, show_progress=False)


def test_unknown_members_get_no_rows_and_a_warning(world: World):
    first = world.log[world.log["request_id"] == world.log["request_id"].iloc[0]]
    ghost = first.assign(request_id="ghost-request", member_id="m-nobody")
    log = pd.concat([first, ghost], ignore_index=True)
    with pytest.warns(UnknownMembersWarning, match="1 of 2 logged requests"):
        table = policy_table(log, world.events, *_system(world, world.trained), feed_size=3)
    assert table.attrs["unknown_members"] == 1 and "ghost-request" not in set(table["request_id"])
    assert len(table) == 3 and table["position"].tolist() == [0, 1, 2]


class Recorder:
    """The real exploration rule, under another name (so a deterministic table keeps it), recording
    each visible slot's propensity."""

    name = "recorded-exploration"

    def __init__(self, rule: Exploration, seen: dict[tuple[str, int, str], float]) -> None:
        self.rule, self.seen = rule, seen

    def apply(self, slots: list[Slot], ctx: RerankContext) -> list[Slot]:
        out = self.rule.apply(slots, ctx)
        for pos, s in enumerate(out[: ctx.feed_size]):
            self.seen[(ctx.request_id, pos, s.item_id)] = s.propensity
        return out


def test_exploration_table_holds_the_exact_probability_of_every_feed_it_can_serve(world: World):
    rankers, spr, rules = _system(world, world.trained)
    at = next(i for i, r in enumerate(rules) if r.name == "exploration")
    explore = Exploration(epsilon=0.5)
    table = policy_table(world.log, world.events, rankers, spr, [*rules[:at], explore, *rules[at + 1 :]], explore=True)
    assert table.attrs["explore"] is True and table.attrs["epsilon"] == 0.5
    sums = table.groupby(["request_id", "position"])["probability"].sum()
    assert ((sums - 1.0).abs() < 1e-9).all()
    # the greedy feed (what explore=False gives) holds the top probability at each of its positions
    greedy = policy_table(world.log, world.events, rankers, spr, rules)
    top = table.loc[table.groupby(["request_id", "position"])["probability"].idxmax()]
    pd.testing.assert_frame_equal(
        top[["request_id", "position", "item_id"]].reset_index(drop=True),
        greedy[["request_id", "position", "item_id"]].reset_index(drop=True),
    )
    # every feed the exploring mixer actually served has, slot by slot, the propensity the table says
    seen: dict[tuple[str, int, str], float] = {}
    served = policy_table(
        world.log, world.events, rankers, spr, [*rules[:at], Recorder(Exploration(epsilon=0.5), seen), *rules[at + 1 :]]
    )
    prob = {(r, p, i): q for r, p, i, q in table.itertuples(index=False)}
    assert len(seen) == len(served) > 0
    assert all(abs(prob[key] - q) < 1e-12 for key, q in seen.items())
    assert (served["item_id"] != greedy["item_id"]).any()  # epsilon 0.5: some requests were shuffled


def _system(world: World, version: str) -> tuple:
    """The configured FPRs (baselines here), the SPR ``version`` and the configured rules."""
    config = load_config(world.settings.pipeline_config)
    rankers = {name: load_ranker(world.settings, spec) for name, spec in config.fprs.items()}
    spr = ModelStore(world.settings.model_dir).load("spr", version).model
    return rankers, spr, config.build_rules()


def test_the_served_history_is_the_members_recent_impressions():
    t0 = 1.7e9
    inv = ServedInventory()
    for n, (member, item, t) in enumerate([("m1", "p1", 100.0), ("m1", "p2", 3000.0), ("m2", "p3", 3500.0)]):
        inv.apply(
            MemberEvent(
                event_id=f"e{n}",
                event_type="impression",
                member_id=member,
                timestamp=t0 + t,
                item_id=item,
                item_type="post",
                item_actor_id="m9",
            )
        )
    assert inv.recent("m1", t0 + 3700.0, ttl_s=3600.0) == {"p1": t0 + 100.0, "p2": t0 + 3000.0}
    assert inv.recent("m1", t0 + 4000.0, ttl_s=3600.0) == {"p2": t0 + 3000.0}  # p1 is forgotten
    assert inv.recent("m3", t0 + 4000.0, ttl_s=3600.0) == {}


def test_an_empty_log_gives_an_empty_table(world: World):
    table = policy_table(world.log.iloc[:0], world.events, *_system(world, world.trained))
    assert list(table.columns) == ["request_id", "position", "item_id", "probability"] and table.empty
    assert table.attrs["requests"] == 0 and table.attrs["requests_with_rows"] == 0
