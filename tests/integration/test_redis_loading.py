"""A restarted Redis answers ``-LOADING`` to every command until it has read its data back. The feature
service's writes must wait that out like any other outage: one CI run saw the service exit instead
(redis-py's ``BusyLoadingError`` is a ``ConnectionError``, but the raw pipelined path raised a plain
``ResponseError``), so the rows of every event after Redis's restart were missing. This test reproduces
the loading state on a private redis-server (never the shared one), slowed by its ``key-load-delay``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from features.redis_layout import send_while_redis_returns
from feedrank import infra
from tests.ports import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")

KEYS_TO_LOAD = 20_000
ROWS = 500


def start_redis(folder: Path, port: int, *extra: str) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes"]
    args += ["--save", "", "--daemonize", "no", "--logfile", str(folder / "redis.log"), *extra]
    proc = subprocess.Popen([shutil.which("redis-server"), *args])
    deadline = time.monotonic() + 20
    while not infra.port_open("127.0.0.1", port, timeout=0.2):
        assert proc.poll() is None and time.monotonic() < deadline, (folder / "redis.log").read_text()[-2000:]
        time.sleep(0.02)
    return proc


@pytest.fixture
def loading_redis(tmp_path) -> Iterator[redis.Redis]:
    """A private Redis, just restarted and still loading ``KEYS_TO_LOAD`` keys from its append-only file."""
    port, folder = free_port(), tmp_path / "redis"
    proc = start_redis(folder, port, "--enable-debug-command", "local")
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))  # sees LOADING
    try:
        client.execute_command("DEBUG", "POPULATE", KEYS_TO_LOAD, "loaded")  # not in the AOF: rewrite it
        client.bgrewriteaof()
        while (info := client.info("persistence"))["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]:
            time.sleep(0.05)
        client.shutdown()
        proc.wait(20)
        # Slow loading (microseconds per key), answering clients every KiB read rather than every 2 MiB.
        proc = start_redis(folder, port, "--key-load-delay", "50", "--loading-process-events-interval-bytes", "1024")
        yield client
    finally:
        proc.terminate()
        proc.wait(20)


def hsets(n: int) -> bytes:
    pack = redis.Connection().pack_command
    return b"".join(b"".join(pack("HSET", f"row:{i}", "value", str(i))) for i in range(n))


def test_writes_wait_while_a_restarted_redis_is_loading(loading_redis, caplog):
    with pytest.raises(redis.BusyLoadingError):  # the state under test, not a Redis already up
        loading_redis.ping()
    with caplog.at_level(logging.WARNING, logger="features.redis_layout"):
        send_while_redis_returns(loading_redis, hsets(ROWS), ROWS, outage_s=60)
    assert any("BusyLoadingError" in r.getMessage() for r in caplog.records)
    assert loading_redis.dbsize() == KEYS_TO_LOAD + ROWS  # the loaded data, and every row written
    assert [loading_redis.hget(f"row:{i}", "value") for i in (0, ROWS - 1)] == [b"0", str(ROWS - 1).encode()]


def test_an_error_that_is_not_an_outage_is_raised_at_once(loading_redis):
    while True:
        try:
            loading_redis.ping()
            break
        except redis.BusyLoadingError:
            time.sleep(0.1)
    loading_redis.set("row:1", "a string, not a hash")
    started = time.monotonic()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        send_while_redis_returns(loading_redis, hsets(3), 3, outage_s=60)
    assert time.monotonic() - started < 5  # not retried as if Redis were down
    assert loading_redis.hget("row:2", "value") == b"2"  # the other rows of the payload were written
