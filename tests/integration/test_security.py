"""feedrank against a Redis that requires a password: a second, private redis-server (never the shared one)
started by feedrank's own ``infra.redis_up`` on a free port, with its state, config and log in a temporary
folder. Without the password Redis refuses; with it the Feast online store and the mixer's shared state
work; a wrong or missing password fails at once, with an error that names authentication."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.families import VIEWS
from features.store import SERVING_FEATURES, FastOnlineReader, OnlineReader, OnlineWriter, apply_definitions
from feedrank import infra
from feedrank.settings import Settings
from services.feed_state import ExplanationStore, ServedStore
from tests.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")

# One candidate, and the entity values of every row written for it.
MEMBER, ITEM, ITEM_TYPE, ACTOR = "m-sec", "i-sec", "post", "a-sec"
ENTITIES = {"member_id": MEMBER, "item_id": ITEM, "item_type": ITEM_TYPE, "actor_id": ACTOR}


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[tuple[Settings, str, str]]:
    """(settings of the private Redis with its password, the password, an alphanumeric part of it that any
    copy of it holds verbatim: raw, JSON-quoted or as redis.conf quotes it)."""
    tmp = tmp_path_factory.mktemp("secured")
    marker = secrets.token_hex(16)
    password = f'Pw{marker} "q=\\;\n'  # a space, a quote, '=', a backslash, a newline: every layer quotes it
    port = free_port()
    base = Settings()
    assert port not in (base.redis_port, base.kafka_port) and not infra.port_open("127.0.0.1", port)
    s = Settings(
        **{
            **base.model_dump(),
            "state_dir": tmp / "state",
            "logs_path": tmp / "logs",
            "models_path": tmp / "models",
            "impressions_path": tmp / "impressions",
            "feast_project": "test_security",
            "redis_host": "127.0.0.1",
            "redis_port": port,
            "redis_db": 0,
            "redis_ssl": False,
            "redis_password": password,
        }
    )
    pid_file = s.redis_dir / "redis.pid"
    assert tmp in pid_file.parents  # redis_up manages only this folder's server, never the shared one
    try:
        status = infra.redis_up(s)
        assert status.reachable and status.managed and status.pid is not None
        yield s, password, marker
    finally:
        infra._stop_pid(pid_file)  # the pid this test's redis_up wrote, in its own folder
    assert not infra.port_open("127.0.0.1", port)


def with_password(s: Settings, password: str | None) -> Settings:
    return Settings(**{**s.model_dump(), "redis_password": password})


def test_redis_conf_is_private(secured):
    s, password, marker = secured
    conf = s.redis_dir / "redis.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert marker in conf.read_text() and password not in conf.read_text()  # quoted byte by byte
    assert marker not in (s.log_dir / "redis.log").read_text()


def test_without_password_redis_refuses(secured):
    s, _, _ = secured
    no_retry = Retry(NoBackoff(), 0)  # redis-py retries authentication errors, 3.5 s in all
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        redis.Redis(host=s.redis_host, port=s.redis_port, retry=no_retry).ping()
    with pytest.raises(infra.RedisAuthError, match="requires a password: set FEEDRANK_REDIS_PASSWORD"):
        infra.check_redis_credentials(with_password(s, None))


def test_feast_online_round_trip_with_password(secured):
    s, _, _ = secured
    store = apply_definitions(s)
    rows: dict[str, list[dict]] = {}
    expected: dict[str, float] = {}
    for v, view in enumerate(VIEWS):
        row: dict = {k: ENTITIES[k] for k in view.join_keys}
        for c, col in enumerate(view.stored):
            row[col] = expected[f"{view.name}__{col}"] = 100.0 * v + c + 0.5
        rows[view.name] = [row]
    assert OnlineWriter(store, s).write(rows, time.time()) == len(VIEWS)

    cols = [f.replace(":", "__") for f in SERVING_FEATURES]
    want = np.array([expected[c] for c in cols])
    fast = FastOnlineReader(store, s).read(MEMBER, [(ITEM, ITEM_TYPE, ACTOR)])
    np.testing.assert_array_equal(fast[cols].to_numpy(float)[0], want)
    # Feast's own SDK read, through its own Redis client built from the connection string.
    sdk = OnlineReader(store).read(MEMBER, [(ITEM, ITEM_TYPE, ACTOR)])
    np.testing.assert_array_equal(sdk[cols].astype(float).to_numpy()[0], want)
    resp = store.get_online_features(
        features=["item_stats:imp_total"], entity_rows=[{"item_id": ITEM}], full_feature_names=True
    ).to_dict()
    assert resp["item_stats__imp_total"] == [expected["item_stats__imp_total"]]


def test_feed_state_with_password(secured):
    s, _, _ = secured
    client = s.redis_client()
    served, explanations = ServedStore(client, s), ExplanationStore(client, s)
    now = time.time()
    pipe = client.pipeline()
    served.record(MEMBER, ["i1", "i2"], now, pipe)
    explanations.save("req-sec", {"request_id": "req-sec", "items": []}, pipe)
    pipe.execute()
    assert served.recent(MEMBER, now + 1) == {"i1": now, "i2": now}
    assert explanations.load("req-sec") == {"request_id": "req-sec", "items": []}


@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong-password", "no-password"])
def test_bad_password_fails_at_once_naming_authentication(secured, password):
    s, _, marker = secured
    bad = with_password(s, None if password is None else password + secrets.token_hex(8))
    for setup in (infra.redis_up, apply_definitions, infra.check_redis_credentials):
        t0 = time.monotonic()
        with pytest.raises(infra.RedisAuthError) as err:
            setup(bad)
        assert time.monotonic() - t0 < 2  # no 30 s wait for a Redis that "does not become ready"
        msg = str(err.value)
        assert "refused authentication" in msg and "FEEDRANK_REDIS_PASSWORD" in msg, msg
        assert marker not in msg and (password is None or bad.redis_password.get_secret_value() not in msg)
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no redis-py traceback under it


def test_bad_password_on_the_serving_paths_is_an_authentication_error(secured):
    """Past setup (say the password changed under running services), the feature reads fail with
    redis-py's AuthenticationError after its few retries: neither a hang nor another error."""
    s, _, _ = secured
    store = apply_definitions(s)
    bad = with_password(s, "wrong")
    t0 = time.monotonic()
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        FastOnlineReader(store, bad).read(MEMBER, [(ITEM, ITEM_TYPE, ACTOR)])
    assert time.monotonic() - t0 < 15


def test_no_file_written_holds_the_password_but_redis_conf(secured):
    s, _, marker = secured
    apply_definitions(s)
    holders = {
        p.relative_to(s.state_dir.parent)
        for p in s.state_dir.parent.rglob("*")
        if p.is_file() and marker.encode() in p.read_bytes()
    }
    assert holders == {Path("state/redis/redis.conf")}
    status = "\n".join(c.line() for c in infra.status(s))
    assert marker not in status
