"""Policy tables: the evaluated policy's probability of showing an item at a position for a request.

A table has the columns ``request_id, position, item_id, probability`` (CSV or Parquet); rows not
listed have probability 0. :func:`join_policy` attaches to each logged row the probability of its
logged item at its logged position. It dictionary-encodes the string ids of log and table together
(with Arrow, once) and then only compares and bincounts integers, so a million-row log joins in a
fraction of a second without a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from simulator.logs import LogFormatError, describe_rows

POLICY_COLUMNS = ["request_id", "position", "item_id", "probability"]
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
SUM_TOLERANCE = 1e-9
_ID_COLUMNS = ("request_id", "item_id")
_ARROW_STRINGS = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}


class PolicyFormatError(ValueError):
    """A policy table that cannot be evaluated; the message names the table, the problem and the rows."""


def describe_slots(request_id: np.ndarray, position: np.ndarray, limit: int = 5) -> str:
    """``2 slot(s) (r1 position 0, r7 position 3)``: how errors name (request_id, position) pairs."""
    shown = ", ".join(f"{r} position {p}" for r, p in zip(request_id[:limit], position[:limit], strict=True))
    more = f", ... {len(request_id) - limit} more" if len(request_id) > limit else ""
    return f"{len(request_id)} slot(s) ({shown}{more})"


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet table; ids stay strings in CSV even when they look like numbers, and strings stay
    Arrow strings (making a million Python strings would cost more than the whole evaluation)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in _ID_COLUMNS})
            table = pacsv.read_csv(path, convert_options=opts)
        else:
            table = pq.read_table(path)
        return table.to_pandas(types_mapper=_ARROW_STRINGS.get)
    except (pa.ArrowInvalid, OSError) as err:
        raise PolicyFormatError(f"policy {path}: {err}") from None


def read_policy(path: str | Path, reward: str | None = None, check_keys: bool = True) -> pd.DataFrame:
    """Read and validate a policy table (see :func:`validate_policy`)."""
    path = Path(path)
    if not path.is_file():
        raise PolicyFormatError(f"policy {path} is not a file")
    return validate_policy(read_table(path), source=f"policy {path}", reward=reward, check_keys=check_keys)


def _as_str(values: pd.Series) -> pd.Series:
    """Ids as strings, so a CSV's numeric-looking ids join a Parquet's string ones."""
    if pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
        return values.reset_index(drop=True)
    return values.astype(str).reset_index(drop=True)


def _codes(parts: list[pd.Series]) -> tuple[np.ndarray, int]:
    """(code of each value, number of distinct values) over the concatenated string columns."""
    chunks: list[pa.Array] = []
    for part in parts:
        try:
            arr = pa.array(part, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # an object column mixing strings and numbers
            arr = pa.array(part.astype(str), type=pa.string())
        chunks.extend(arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])
    encoded = pa.chunked_array(chunks, type=pa.string()).combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _integral(values: pd.Series, what: str) -> np.ndarray:
    """Positions as int64; a non-integer position is an error naming the rows."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.int64)
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(num) | (num != np.round(num))
    if bad.any():
        raise PolicyFormatError(f"{what}: position is not an integer in {describe_rows(bad)}")
    return num.astype(np.int64)


def validate_policy(
    policy: pd.DataFrame, source: str = "policy", reward: str | None = None, check_keys: bool = True
) -> pd.DataFrame:
    """The table with normalised types, or an error naming the offending rows or slots.

    Checks: the columns (and ``reward`` when given) exist and are non-empty; probabilities (and rewards)
    are numbers, probabilities in [0, 1]; and, with ``check_keys``, no (request_id, position, item_id)
    repeats and the probabilities of one (request_id, position) add up to at most 1. :func:`join_policy`
    checks the keys itself, on codes it computes anyway, so a caller that joins can skip them here."""
    wanted = [*POLICY_COLUMNS, *([reward] if reward else [])]
    missing = [c for c in wanted if c not in policy]
    if missing:
        raise PolicyFormatError(f"{source} lacks column(s) {missing}; it has {list(policy.columns)}")
    for c in wanted:
        null = policy[c].isna().to_numpy()
        if null.any():
            raise PolicyFormatError(f"{source}: column {c!r} is empty in {describe_rows(null)}")
    out = pd.DataFrame(
        {
            "request_id": _as_str(policy["request_id"]),
            "position": _integral(policy["position"], source),
            "item_id": _as_str(policy["item_id"]),
            "probability": pd.to_numeric(policy["probability"], errors="coerce").to_numpy(dtype=np.float64),
        }
    )
    prob = out["probability"].to_numpy()
    bad = ~((prob >= 0) & (prob <= 1))  # NaN (not a number) fails both
    if bad.any():
        raise PolicyFormatError(f"{source}: probability is not a number in [0, 1] in {describe_rows(bad)}")
    if reward:
        r = pd.to_numeric(policy[reward], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(r)
        if bad.any():
            raise PolicyFormatError(f"{source}: reward column {reward!r} is not a number in {describe_rows(bad)}")
        out[reward] = r
    if check_keys:
        keys = _Keys.of([out["request_id"]], [out["position"].to_numpy()], [out["item_id"]])
        _check_policy_keys(out, keys.slot, keys.item, keys.n_slots, source)
    return out


@dataclass(frozen=True)
class _Keys:
    """Integer codes of the rows' requests, slots (request x position) and items, from a factorisation of
    the string ids, so that checks and joins are bincounts and comparisons of integers."""

    request: np.ndarray
    n_requests: int
    slot: np.ndarray  # in [0, n_slots), with n_slots small enough to bincount over
    n_slots: int
    item: np.ndarray

    @staticmethod
    def of(requests: list[pd.Series], positions: list[np.ndarray], items: list[pd.Series]) -> _Keys:
        req, n_req = _codes(requests)  # in order of first appearance
        pos = np.concatenate(positions).astype(np.int64)
        lo, hi = (int(pos.min()), int(pos.max())) if len(pos) else (0, 0)
        if hi - lo < 1 << 16:  # positions are small integers: use them as they are
            pos_code, n_pos = pos - lo, hi - lo + 1
        else:
            codes, unique = pd.factorize(pos)
            pos_code, n_pos = codes.astype(np.int64), len(unique)
        slot, n_slots = req * n_pos + pos_code, n_req * n_pos
        if n_slots > 4 * len(slot) + 1024:  # sparse positions: compact the slots before bincounting
            codes, unique = pd.factorize(slot)
            slot, n_slots = codes.astype(np.int64), len(unique)
        return _Keys(req, n_req, slot, n_slots, _codes(items)[0])


def _check_policy_keys(policy: pd.DataFrame, slot: np.ndarray, item: np.ndarray, n_slots: int, source: str) -> None:
    """No (request_id, position, item_id) twice; at most probability 1 per (request_id, position)."""
    per_slot = np.bincount(slot, minlength=n_slots)
    shared = per_slot[slot] > 1  # only rows sharing a slot can repeat an item
    if shared.any():
        dup = np.zeros(len(slot), dtype=bool)
        n_items = int(item.max()) + 1  # slot x item fits int64: n_slots is at most ~4x the rows (see _Keys)
        dup[shared] = pd.Index(slot[shared] * n_items + item[shared]).duplicated(keep=False)
        if dup.any():
            raise PolicyFormatError(f"{source}: (request_id, position, item_id) repeats in {describe_rows(dup)}")
    total = np.bincount(slot, weights=policy["probability"].to_numpy(), minlength=n_slots)
    over = total > 1.0 + SUM_TOLERANCE
    if over.any():
        rows = np.flatnonzero(over[slot])
        first = rows[np.unique(slot[rows], return_index=True)[1]]  # a row of each offending slot
        first.sort()
        sums = ", ".join(f"{total[slot[r]]:.6g}" for r in first[:5])
        raise PolicyFormatError(
            f"{source}: probabilities of one request and position add up to more than 1 in "
            f"{describe_slots(policy['request_id'].to_numpy()[first], policy['position'].to_numpy()[first])}; "
            f"sums {sums}"
        )


@dataclass(frozen=True)
class JoinedLog:
    """The logged rows with what the evaluated policy says about them, as arrays in log order."""

    clusters: np.ndarray  # request code of each row, 0..requests-1
    clicked: np.ndarray
    propensity: np.ndarray
    probability: np.ndarray  # of the logged item at the logged position
    position: np.ndarray
    reward_logged: np.ndarray | None  # the reward model's prediction for the logged item
    direct: np.ndarray | None  # sum over the policy's items for the slot of probability x prediction
    requests: int
    ignored_policy_rows: int  # rows of requests absent from the log
    ignored_policy_requests: int
    uncovered_slots: int  # logged slots for which the policy table has no row at all


def join_policy(
    log: pd.DataFrame, policy: pd.DataFrame, reward: str | None = None, source: str = "policy"
) -> JoinedLog:
    """Attach the policy's probabilities (and, with ``reward``, the reward model's terms) to the log.

    ``log`` as :func:`simulator.logs.read_log` returns it, ``policy`` as :func:`validate_policy` does
    (its key checks are repeated here). A (request_id, position) logged twice is an error naming the
    slots. No hashing of combined keys: each policy row finds the logged row of its slot through a dense
    slot -> row array, and matches it when the item codes agree."""
    n = len(log)
    log_pos = _integral(log["position"], "log")
    keys = _Keys.of(
        [_as_str(log["request_id"]), policy["request_id"]],
        [log_pos, policy["position"].to_numpy()],
        [_as_str(log["item_id"]), policy["item_id"]],
    )
    n_req = int(keys.request[:n].max()) + 1 if n else 0  # first-appearance codes: the log's requests come first
    log_slot, pol_slot = keys.slot[:n], keys.slot[n:]
    _check_policy_keys(policy, pol_slot, keys.item[n:], keys.n_slots, source)

    row_of_slot = np.full(keys.n_slots, -1, dtype=np.int64)
    row_of_slot[log_slot] = np.arange(n)
    if n and (row_of_slot[log_slot] != np.arange(n)).any():  # a later row took the slot: logged twice
        dup = np.bincount(log_slot, minlength=keys.n_slots)[log_slot] > 1
        rows = np.flatnonzero(dup & ~pd.Index(log_slot).duplicated(keep="first"))  # one row per slot
        raise LogFormatError(
            f"log: (request_id, position) is logged more than once in {describe_rows(dup)}: "
            f"{describe_slots(log['request_id'].to_numpy()[rows], log_pos[rows])}"
        )
    row = row_of_slot[pol_slot]  # the logged row of each policy row's slot, or -1
    hit = np.flatnonzero(row >= 0)
    same_item = hit[keys.item[n:][hit] == keys.item[:n][row[hit]]]
    prob = policy["probability"].to_numpy(dtype=np.float64)
    probability = np.zeros(n)
    probability[row[same_item]] = prob[same_item]  # keys are unique, so at most one policy row per logged row
    covered = np.zeros(n, dtype=bool)
    covered[row[hit]] = True

    reward_logged = direct = None
    if reward:
        reward_logged = pd.to_numeric(log[reward], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(reward_logged)
        if bad.any():
            raise LogFormatError(f"log: reward column {reward!r} is not a number in {describe_rows(bad)}")
        pr = prob[hit] * policy[reward].to_numpy(dtype=np.float64)[hit]
        direct = np.bincount(row[hit], weights=pr, minlength=n)
    in_log = keys.request[n:] < n_req
    return JoinedLog(
        clusters=keys.request[:n].astype(np.intp),
        clicked=log["clicked"].to_numpy(dtype=np.float64),
        propensity=pd.to_numeric(log["propensity"]).to_numpy(dtype=np.float64),
        probability=probability,
        position=log_pos,
        reward_logged=reward_logged,
        direct=direct,
        requests=n_req,
        ignored_policy_rows=int((~in_log).sum()),
        ignored_policy_requests=keys.n_requests - n_req,
        uncovered_slots=int(n - covered.sum()),
    )
