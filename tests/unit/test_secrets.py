"""No secret (FEEDRANK_REDIS_PASSWORD, FEEDRANK_KAFKA_SASL_PASSWORD) is shown, logged or written where it
should not be: settings' repr, str and JSON, log records and output while clients and the Feast store are
built, files that Feast's apply writes, `feedrank infra status`, infrastructure errors; the redis.conf that
must hold it is owner-only; and no file of the repository assigns one. Needs no Kafka or Redis: every
address points at a closed port."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore

from features.store import apply_definitions, feature_store
from feedrank import infra
from feedrank.settings import REPO_ROOT, SECRET_MASK, Settings
from services.kafka_io import make_consumer, make_producer
from tests.ports import free_port


def new_secret() -> str:
    return "S" + secrets.token_hex(16)


@pytest.fixture
def secured(tmp_path) -> tuple[Settings, str, str]:
    """Settings with a Redis password and Kafka SASL credentials, everything under ``tmp_path`` (a copy of
    the Feast repository included), every address a closed port; (settings, redis password, Kafka's)."""
    redis_pw, kafka_pw = new_secret(), new_secret()
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    s = Settings(
        state_dir=tmp_path / "state",
        logs_path=tmp_path / "logs",
        models_path=tmp_path / "models",
        impressions_path=tmp_path / "impressions",
        feast_repo=repo,
        feast_project="test_secrets",
        redis_host="127.0.0.1",
        redis_port=free_port(),
        redis_password=redis_pw,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="feedrank",
        kafka_sasl_password=kafka_pw,
    )
    return s, redis_pw, kafka_pw


def files_holding(root: Path, *needles: str) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file() and any(n.encode() in p.read_bytes() for n in needles)]


# ------------------------------------------------------------------------------------------ settings
def test_settings_never_show_secrets(secured):
    s, redis_pw, kafka_pw = secured
    shown = [repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json")), f"{s}", f"{s!r}"]
    shown += [repr(s.redis_password), str(s.kafka_sasl_password)]
    for text in shown:
        assert redis_pw not in text and kafka_pw not in text
    assert s.model_dump(mode="json")["redis_password"] == SECRET_MASK
    # ...while the clients and the child processes get the real values.
    assert s.redis_kwargs()["password"] == redis_pw
    env = s.child_env()
    assert env["FEEDRANK_REDIS_PASSWORD"] == redis_pw and env["FEEDRANK_KAFKA_SASL_PASSWORD"] == kafka_pw
    assert Settings(**s.model_dump()).redis_password.get_secret_value() == redis_pw  # copies keep it


def test_kafka_client_config_from_security_settings(tmp_path):
    ca = tmp_path / "ca.pem"
    pw = new_secret()
    s = Settings(
        kafka_bootstrap="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="feedrank",
        kafka_sasl_password=pw,
        kafka_ssl_cafile=ca,
    )
    assert s.kafka_client_config() == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "feedrank",
        "sasl.password": pw,
        "ssl.ca.location": str(ca),
    }
    plain = Settings(kafka_bootstrap="broker:9092").kafka_client_config()
    assert plain == {"bootstrap.servers": "broker:9092", "security.protocol": "PLAINTEXT"}


def test_kafka_security_settings_from_the_environment(monkeypatch, tmp_path):
    pw = new_secret()
    for name, value in {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "REDIS_PASSWORD": pw,
        "REDIS_SSL": "true",
    }.items():
        monkeypatch.setenv(f"FEEDRANK_{name}", value)
    s = Settings()
    assert s.kafka_client_config()["security.protocol"] == "SSL"
    assert s.kafka_client_config()["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert s.redis_kwargs()["ssl"] is True and s.redis_kwargs()["password"] == pw
    assert ",ssl=true," in s.feast_redis_connection_string()


# ------------------------------------------------------------------------------ Feast's connection
@pytest.mark.parametrize("password", ["true", "null", "12345", '"quoted"', "back\\slash", "a=b c", "ünï\n"])
def test_feast_connection_string_carries_any_password_exactly(password):
    conn = Settings(redis_password=password, redis_ssl=True).feast_redis_connection_string()
    nodes, params = RedisOnlineStore._parse_connection_string(conn)  # what Feast hands redis-py
    assert nodes == [{"host": "127.0.0.1", "port": "6379"}]
    assert params == {"db": 0, "ssl": True, "password": password}
    assert repr(conn) == repr(f"127.0.0.1:6379,db=0,ssl=true,password={SECRET_MASK}")
    for same in (copy.deepcopy(conn), pickle.loads(pickle.dumps(conn))):
        assert same == conn and repr(same) == repr(conn)


def test_feast_connection_string_without_password():
    conn = Settings().feast_redis_connection_string()
    assert conn == "127.0.0.1:6379,db=0" and repr(conn) == repr("127.0.0.1:6379,db=0")


def test_password_with_a_comma_is_refused_without_showing_it():
    pw = new_secret() + ",x"
    with pytest.raises(ValueError, match="holds a ','") as err:
        Settings(redis_password=pw).feast_redis_connection_string()
    assert pw not in str(err.value)


def test_feast_store_repr_hides_the_password(secured):
    s, redis_pw, _ = secured
    store = feature_store(s)
    assert redis_pw not in repr(store) and redis_pw not in repr(store.config) and redis_pw not in str(store.config)


def test_no_log_output_or_file_shows_secrets(secured, caplog, capfd):
    """Everything that builds a client or the Feast store, with every logger at DEBUG."""
    s, redis_pw, kafka_pw = secured
    caplog.set_level(logging.DEBUG)
    s.redis_client().close()
    infra.check_redis_credentials(s)  # Redis unreachable: nothing to check, and no error
    store = apply_definitions(s)  # Feast's apply: registry, and the repository's (copied) folder
    store.list_feature_views()
    producer = make_producer(s)
    producer.flush(0.3)  # librdkafka tries the (closed) broker, and logs that to stderr
    consumer = make_consumer(s, "secrets")
    consumer.poll(0.1)
    consumer.close()
    assert [c.line() for c in infra.status(s)]

    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        assert redis_pw not in text and kafka_pw not in text
    for record in caplog.records:
        shown = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert redis_pw not in shown and kafka_pw not in shown, record.name
    assert (s.feast_dir / "registry.db").exists()
    assert files_holding(s.state_dir.parent, redis_pw, kafka_pw) == []  # redis.conf: only if Redis is started


def test_infra_status_command_shows_no_secret(secured):
    s, redis_pw, kafka_pw = secured
    proc = subprocess.run(
        [sys.executable, "-m", "feedrank.cli", "infra", "status"],
        capture_output=True,
        text=True,
        env=s.child_env(),
        timeout=60,
    )
    assert proc.returncode == 1 and f"127.0.0.1:{s.redis_port}" in proc.stdout  # both down, and said so
    assert redis_pw not in proc.stdout + proc.stderr and kafka_pw not in proc.stdout + proc.stderr


def test_infra_errors_mask_secrets_in_log_tails(secured, tmp_path):
    s, redis_pw, kafka_pw = secured
    log = tmp_path / "server.log"
    log.write_text(f"starting\nbad line: requirepass {redis_pw}\nsasl {kafka_pw}\n")
    with pytest.raises(infra.InfraError) as err:
        infra._wait_for(lambda: False, "Redis", 0.01, log, hide=infra._secrets(s))
    assert "bad line" in str(err.value) and SECRET_MASK in str(err.value)
    assert redis_pw not in str(err.value) and kafka_pw not in str(err.value)


# ---------------------------------------------------------------------------------------- redis.conf
def requirepass_of(conf: Path) -> bytes:
    (line,) = [ln for ln in conf.read_text().splitlines() if ln.startswith("requirepass ")]
    quoted = line.removeprefix("requirepass ")
    assert quoted[0] == quoted[-1] == '"'
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), quoted[1:-1].encode())


def test_redis_conf_is_owner_only_and_quotes_the_password(secured):
    s, _, _ = secured
    pw = f'{new_secret()} "q\\ \nbind 0.0.0.0'  # a newline must not add a directive
    s = Settings(**{**s.model_dump(), "redis_password": pw})
    old = os.umask(0)  # even then: the file is created 0600, never readable by others for a moment
    try:
        conf = infra._write_redis_conf(s)
    finally:
        os.umask(old)
    assert conf.stat().st_mode & 0o777 == 0o600
    assert requirepass_of(conf) == pw.encode()
    assert [ln.split()[0] for ln in conf.read_text().splitlines()].count("bind") == 1
    assert pw not in conf.read_text()

    conf.chmod(0o644)  # a conf left readable by an older version is tightened
    infra._write_redis_conf(s)
    assert conf.stat().st_mode & 0o777 == 0o600


def test_redis_conf_without_password_has_no_requirepass(secured):
    s, _, _ = secured
    conf = infra._write_redis_conf(Settings(**{**s.model_dump(), "redis_password": None}))
    assert "requirepass" not in conf.read_text()


# ----------------------------------------------------------------------------- the repository's files
# A value is a placeholder, not a secret: empty, or a reference ($VAR, ${VAR}, $(cmd), <...>, {...}, ***, ...).
PLACEHOLDER = re.compile(r"^(?:$|\$|<|\{|\*|\.\.\.|…|%\()")  # matched against the value unquoted
_NAME = r"FEEDRANK_(?:REDIS|KAFKA_SASL)_PASSWORD"
_QUOTED = r"""(?:"[^"\n]*"|'[^'\n]*')"""
SECRET_ASSIGNMENTS = {
    # shell, .env, Dockerfile ENV, make: NAME=value
    "env assignment": re.compile(rf"\b{_NAME}=(?P<value>{_QUOTED}|[^\s;&|)\"']*)"),
    # YAML (compose environment:): NAME: value
    "yaml assignment": re.compile(rf"^\s*-?\s*{_NAME}\s*:\s*(?P<value>{_QUOTED}|[^\s#]*)", re.M),
    # Python / JSON, a literal value: "NAME": "value", env["NAME"] = "value", setenv("NAME", "value")
    "quoted assignment": re.compile(rf"""["']{_NAME}["']\]?\s*[:=,]\s*(?P<value>{_QUOTED})"""),
    # redis.conf, or redis-server's option
    "requirepass": re.compile(r"""(?:^\s*|--)requirepass["']?[\s,]+(?P<value>["']?[^\s"',\]]*)""", re.M),
    # Feast's connection string: host:port,k=v,...,password=value
    "connection string": re.compile(r":\d+(?:,\w+=[^\s,]*)*,password=(?P<value>[^\s,\"'&;]*)"),
    # a Redis URL with a password
    "redis url": re.compile(r"rediss?://[^\s:/@]*:(?P<value>[^\s@/]+)@"),
    # librdkafka property: in a properties file, or a literal in Python / JSON
    "sasl.password": re.compile(r"^\s*sasl\.password\s*[=:]\s*(?P<value>\S*)", re.M),
    "quoted sasl.password": re.compile(rf"""["']sasl\.password["']\s*[:=]\s*(?P<value>{_QUOTED})"""),
}


def secret_assignments(text: str) -> list[tuple[int, str]]:
    """(line number, rule) of every assignment of a literal secret in ``text``; never the value."""
    found = []
    for rule, pattern in SECRET_ASSIGNMENTS.items():
        for m in pattern.finditer(text):
            if not PLACEHOLDER.match(m["value"].strip("\"'")):
                found.append((text.count("\n", 0, m.start("value")) + 1, rule))
    return found


# Built at run time: this file holds only the "{pw}" placeholder, which is not a secret.
LEAKS = [
    "export FEEDRANK_REDIS_PASSWORD={pw}",
    "ENV FEEDRANK_KAFKA_SASL_PASSWORD={pw}",
    "FEEDRANK_REDIS_PASSWORD='{pw}' feedrank demo",
    "    environment:\n      FEEDRANK_REDIS_PASSWORD: {pw}\n",
    "      - FEEDRANK_KAFKA_SASL_PASSWORD: {pw}",
    'env = {"FEEDRANK_REDIS_PASSWORD": "{pw}"}',
    'os.environ["FEEDRANK_REDIS_PASSWORD"] = "{pw}"',
    'monkeypatch.setenv("FEEDRANK_KAFKA_SASL_PASSWORD", "{pw}")',
    "bind 127.0.0.1\nrequirepass {pw}\n",
    'command: ["redis-server", "--requirepass", "{pw}"]',
    "redis-server --requirepass {pw}",
    "connection_string: 127.0.0.1:6379,db=0,password={pw}",
    "url = redis://default:{pw}@redis:6379/0",
    "sasl.password={pw}",
    'cfg = {"sasl.password": "{pw}"}',
]
NOT_LEAKS = [
    "| `FEEDRANK_REDIS_PASSWORD` | unset | secret; passed to Feast at run time |",
    "Set FEEDRANK_REDIS_PASSWORD to the password of your Redis.",
    "FEEDRANK_REDIS_PASSWORD, FEEDRANK_KAFKA_SASL_PASSWORD: secrets, never written to a file",
    "export FEEDRANK_REDIS_PASSWORD=$(cat /run/secrets/redis)",
    "export FEEDRANK_REDIS_PASSWORD=${REDIS_PASSWORD}",
    "FEEDRANK_REDIS_PASSWORD=<your password>",
    "FEEDRANK_KAFKA_SASL_PASSWORD=...",
    "FEEDRANK_REDIS_PASSWORD=",
    "      FEEDRANK_REDIS_PASSWORD: ${REDIS_PASSWORD}",
    'env["FEEDRANK_REDIS_PASSWORD"] = password',
    'monkeypatch.setenv("FEEDRANK_REDIS_PASSWORD", pw)',
    'env = {**os.environ, "FEEDRANK_REDIS_PASSWORD": s.redis_password.get_secret_value()}',
    '        lines.append(f"requirepass {_redis_conf_value(secret)}")',
    'command: ["redis-server", "--requirepass", "${REDIS_PASSWORD}"]',
    'cfg["sasl.password"] = self.kafka_sasl_password.get_secret_value()',
    "parts.append(_PASSWORD_PART + json.dumps(secret))",
    "redis = Redis(host=host, port=port, password=password)",
    "Settings(redis_password=pw, kafka_sasl_password=SecretStr(pw))",
    "url = redis://redis:6379/0",
    'connection_string: "127.0.0.1:6379,db=0"',
    '    "sasl.password": pw,',
    '    "sasl.password": re.compile(r"sasl[.]password=(?P<value>.*)"),',
    '    "FEEDRANK_REDIS_PASSWORD=",',
    'env = {"FEEDRANK_REDIS_PASSWORD": ""}',
]


@pytest.mark.parametrize("text", LEAKS)
def test_secret_assignment_found(text):
    assert len(secret_assignments(text.replace("{pw}", "hunter2"))) == 1


@pytest.mark.parametrize("text", NOT_LEAKS)
def test_no_false_alarm_on_names_and_references(text):
    assert secret_assignments(text) == []


def test_no_repository_file_assigns_a_secret():
    """Tracked files, and new ones not ignored (about to be committed)."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = sorted({p for p in listed.split("\0") if p})
    assert "feedrank/settings.py" in paths
    found = []
    for rel in paths:
        path = REPO_ROOT / rel
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        found += [f"{rel}:{line} ({rule})" for line, rule in secret_assignments(data.decode(errors="replace"))]
    assert found == [], f"literal secrets (values not shown) at: {found}"
