"""The impression log the deployed system would write: every FPR's top-k, shown in a random order.

The simulator's logging policy shows items from its own candidate sets (friends of friends, any
course), far wider than the FPRs' top-k that the mixer ranks when serving. An SPR fitted on those
rows alone learns where each FPR's score varies widely, and errs where it serves: at the top of each
FPR's list. In the 2,000-member 14-day world (seed 11) its O/E against the truth over each FPR's best
five candidates was 0.85 for network posts and 1.37 for courses, and it mixed the inventories by
those errors. In production the SPR trains on the mixer's own impression log, whose
candidates are the FPRs' answers. This module writes that log for chosen requests of a simulated
world.

For each request the FPRs answer as of that moment (``answer_in_process``), the feature rows are
the online store's as of that moment, and a uniformly random slate of the deduplicated union is
shown: every candidate is at each slot with probability 1/n (the ``propensity``). Clicks are drawn
from the ground truth at the slot's examination, with the member's fatigue from earlier impressions.
The draws do not feed back into the world: the replayed events stay the simulator's. The log is
what the system would have recorded had it served those requests with full exploration.

Each request draws its slate and clicks from its own generator, seeded by the run's seed and the
request's id (``request_rng``, as exploration's). With one generator for the whole log, any
difference in one request's candidates (two runs of the same small world gave FPR scores differing
in the last bit, which can reorder two tied candidates) shifted every later draw: two runs of the
4,000-member 14-day benchmark at the same seed put network's held-out O/E on the served log at 1.051
and 1.041. Now such a difference stays within its request.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from evaluation.feature_replay import FeatureInventory, stored_arrays
from evaluation.fpr_oracle import SimulatedWorld
from features.families import as_columns, numeric
from rankers.fpr import FirstPassRanker
from rankers.inventory import Inventory
from rankers.mixer.mixer import answer_in_process, spr_inputs
from rankers.mixer.spr import LOGGED_BY, SERVING_POLICY
from rankers.rules.exploration import request_rng
from rankers.training import NoProgress, Progress, replay

# Requests whose rows are kept as one frame. One small frame per request, concatenated at the end (and
# each lacking the columns of feature rows none of its candidates had), took the 1,000-member world's
# log of 16,000 requests 1.7 GB above the memory before it, for 0.2 GB of rows; in chunks of aligned
# frames, 0.03 GB. The 4,000-member benchmark's log of every request from the FPRs' split on (108,000)
# ran out of 24 GiB before; it now peaks at 16.5 GB.
CHUNK_REQUESTS = 1000


def served_log(
    sw: SimulatedWorld,
    rankers: Mapping[str, FirstPassRanker],
    requests: pd.DataFrame,
    slate: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """One row per shown slot of each of ``requests`` (``request_id``, ``member_id``, ``timestamp``, in
    time order): the SPR's inputs as serving builds them, the slot's ``position`` and ``propensity``,
    the click ``label`` and its probability under the truth (``true_p``). Candidates unknown to the
    simulator are left out of the union (the truth cannot value them)."""
    if slate < 1:
        raise ValueError(f"slate must be at least 1, got {slate}")
    missing = {"request_id", "member_id", "timestamp"} - set(requests.columns)
    if missing:
        raise ValueError(f"requests need the columns {sorted(missing)}")
    progress = progress or NoProgress()
    examination = sw.truth.examination(np.arange(slate, dtype=np.float64))
    frames: list[dict[str, np.ndarray]] = []  # the requests since the last chunk, as columns
    chunks: list[pd.DataFrame] = []

    def log_request(inv: FeatureInventory, request_id: str, member_id: str, now: float) -> None:
        if member_id not in sw.index:
            return
        _, cands = answer_in_process(rankers, inv, member_id, now)
        ids = cands["item_id"].tolist()
        # Not Series.isin: given a dict, it copies the keys of the whole catalogue on every call.
        known = np.fromiter((i in sw.index for i in ids), dtype=bool, count=len(ids))
        offered = np.flatnonzero(known & ~cands["item_id"].duplicated().to_numpy())
        n = len(offered)
        if n == 0:
            return
        rng = request_rng(request_id, seed)
        # Only the shown slots are read and derived (the union is several times the slate), as plain
        # columns: a DataFrame per request cost more than the reads.
        at = offered[rng.permutation(n)[:slate]]
        shown = {c: v[at] for c, v in as_columns(cands).items()}
        stored = stored_arrays(inv.rows, member_id, shown)
        items = [inv.items.get(i) for i in shown["item_id"]]
        row = spr_inputs({**stored, **shown}, items, now)
        seen = numeric(stored, "member_item__imp_total")
        k = len(at)
        true_p = examination[:k] * sw.relevance(member_id, shown["item_id"].tolist(), now, seen)
        row.update(
            request_id=np.full(k, request_id, dtype=object),
            member_id=np.full(k, member_id, dtype=object),
            timestamp=np.full(k, now),
            position=np.arange(k),
            propensity=np.full(k, 1.0 / n),
            true_p=true_p,
            label=(rng.random(k) < true_p).astype(int),
            **{LOGGED_BY: np.full(k, SERVING_POLICY, dtype=object)},
        )
        frames.append(row)
        if len(frames) == CHUNK_REQUESTS:
            chunks.append(_frame(frames))
            frames.clear()

    def on_chunk(inv: Inventory, chunk: pd.DataFrame) -> None:
        assert isinstance(inv, FeatureInventory)
        for rid, member_id, t in zip(chunk["request_id"], chunk["member_id"], chunk["timestamp"], strict=True):
            log_request(inv, str(rid), str(member_id), float(t))

    requests = requests.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if len(requests):
        replay(
            sw.traffic.events,
            requests,
            on_chunk,
            chunk_seconds=0.0,  # one request per chunk: the inventory and features as of that very request
            progress=progress,
            until=float(requests["timestamp"].max()),
            inventory=FeatureInventory(),
        )
    if frames:
        chunks.append(_frame(frames))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()


def _frame(requests: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Requests' rows (the same columns each) as one frame."""
    return pd.DataFrame({c: np.concatenate([r[c] for r in requests]) for c in requests[0]})
