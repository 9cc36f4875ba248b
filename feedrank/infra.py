"""Local infrastructure without Docker: a single-node KRaft Kafka broker and Redis, on 127.0.0.1.

Kafka comes from Apache's own artifacts on Maven Central (classpath resolved once by Maven and cached
under the state folder); Redis is Debian's ``redis-server``. Every call is idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from feedrank.settings import REPO_ROOT, SECRET_MASK, Settings

KAFKA_POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"


class InfraError(RuntimeError):
    """Local infrastructure could not be provisioned or started; the message says what to fix."""


class RedisAuthError(InfraError):
    """Redis refused feedrank's credentials: FEEDRANK_REDIS_PASSWORD is missing, wrong, or set for a Redis
    that has no password. The message never holds the password."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    reachable: bool
    pid: int | None
    managed: bool  # started by feedrank (vs. an existing server found at the address)

    def line(self) -> str:
        state = "up" if self.reachable else "down"
        owner = f"pid {self.pid}" if self.pid else ("external" if self.reachable else "not running")
        return f"{self.name:6s} {state:5s} {self.address:22s} {owner}"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _stop_pid(path: Path, grace_s: float = 20.0) -> bool:
    pid = _read_pid(path)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return True


def _secrets(settings: Settings) -> list[str]:
    return [s.get_secret_value() for s in (settings.redis_password, settings.kafka_sasl_password) if s]


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, SECRET_MASK)
    return text


def _wait_for(check, what: str, timeout_s: float, log_file: Path | None = None, hide: list[str] | None = None) -> None:
    """Poll ``check`` until true; else an error with the log's last lines, ``hide``'s secrets masked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n--- last lines of " + str(log_file) + " ---\n" + _redact(log_tail(log_file), hide or [])
    raise InfraError(f"{what} did not become ready within {timeout_s:.0f}s{tail}")


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, for an error that must say what a process was doing."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------- Kafka
def _kafka_classpath(settings: Settings) -> Path:
    """Resolve Kafka's jars with Maven once; re-resolve only when the pom changes."""
    libs = settings.kafka_dir / "libs"
    stamp = libs / ".pom-sha256"
    digest = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("Maven ('mvn') is needed to fetch Kafka from Maven Central: apt-get install maven")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(KAFKA_POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InfraError(f"resolving Kafka with Maven failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stamp.write_text(digest)
    return libs


def _kafka_properties(settings: Settings, data_dir: Path) -> str:
    host = settings.kafka_bootstrap.rsplit(":", 1)[0]
    ctl = f"{host}:{settings.kafka_controller_port}"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{ctl}",
            f"listeners=PLAINTEXT://{settings.kafka_bootstrap},CONTROLLER://{ctl}",
            f"advertised.listeners=PLAINTEXT://{settings.kafka_bootstrap}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={settings.topic_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            f"message.max.bytes={settings.max_message_bytes + 64 * 1024}",
            "log.retention.hours=168",
            "",
        ]
    )


_LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
"""


def _kafka_ready(settings: Settings) -> bool:
    if not port_open(*_host_port(settings.kafka_bootstrap)):
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        md = AdminClient(settings.kafka_client_config()).list_topics(timeout=2)
    except KafkaException:  # not ready yet
        return False
    return len(md.brokers) > 0


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def kafka_up(settings: Settings, timeout_s: float = 90.0) -> ComponentStatus:
    pid_file = settings.kafka_dir / "kafka.pid"
    if _read_pid(pid_file) or port_open(*_host_port(settings.kafka_bootstrap)):
        _wait_for(lambda: _kafka_ready(settings), "Kafka", timeout_s)
        return kafka_status(settings)
    java = shutil.which("java")
    if java is None:
        raise InfraError("Java 17+ is needed to run Kafka: apt-get install openjdk-17-jre-headless")
    libs = _kafka_classpath(settings)
    data_dir = settings.kafka_dir / "data"
    conf = settings.kafka_dir / "server.properties"
    log4j = settings.kafka_dir / "log4j.properties"
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    conf.write_text(_kafka_properties(settings, data_dir))
    log4j.write_text(_LOG4J)
    jvm = [
        java,
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        f"{libs}/*",
    ]
    if not (data_dir / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        proc = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(conf)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise InfraError(f"formatting Kafka storage failed:\n{proc.stdout}\n{proc.stderr}")
    log_file = settings.log_dir / "kafka.log"
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    _wait_for(lambda: proc.poll() is None and _kafka_ready(settings), "Kafka", timeout_s, log_file)
    return kafka_status(settings)


def kafka_status(settings: Settings) -> ComponentStatus:
    pid = _read_pid(settings.kafka_dir / "kafka.pid")
    return ComponentStatus(
        "kafka", settings.kafka_bootstrap, port_open(*_host_port(settings.kafka_bootstrap)), pid, pid is not None
    )


# ---------------------------------------------------------------------------------------------- Redis
def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise InfraError("redis-server is missing; install it with: sudo apt-get install redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise InfraError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = shutil.which("redis-server")
    if not found:
        raise InfraError("redis-server still missing after apt-get install redis-server")
    return found


def _redis_ping(settings: Settings, timeout_s: float = 1.0) -> bool:
    """One PING with the configured credentials, without redis-py's retries (it retries authentication
    errors, 3.5 s each); raises ``RedisAuthError`` if Redis refuses the credentials."""
    import redis

    client = settings.redis_client(fail_fast=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except redis.AuthenticationError as err:  # before RedisError: it is a ConnectionError
        address = f"{settings.redis_host}:{settings.redis_port}"
        if settings.redis_password is None:
            fix = "it requires a password: set FEEDRANK_REDIS_PASSWORD"
        else:
            fix = "check FEEDRANK_REDIS_PASSWORD (wrong, or set for a Redis without a password)"
        reason = _redact(str(err), _secrets(settings))
        raise RedisAuthError(f"Redis at {address} refused authentication ({reason}): {fix}") from None
    except redis.RedisError:
        return False
    finally:
        client.close()


def check_redis_credentials(settings: Settings, timeout_s: float = 5.0) -> None:
    """Fail early and clearly (``RedisAuthError``) if the configured Redis refuses the configured
    credentials; a Redis that cannot be reached is left to the caller's first command."""
    _redis_ping(settings, timeout_s)


def _redis_conf_value(value: str) -> str:
    """``value`` as one double-quoted redis.conf argument: every byte but letters and digits as ``\\xHH``,
    so that no space, quote or newline in a password can split the line or add a directive."""
    return '"' + "".join(chr(b) if chr(b).isalnum() and b < 128 else f"\\x{b:02x}" for b in value.encode()) + '"'


def _write_redis_conf(settings: Settings) -> Path:
    """The local Redis's configuration, owner-only (0600) from its creation: it may hold ``requirepass``."""
    settings.redis_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"bind {settings.redis_host}",
        f"port {settings.redis_port}",
        f"dir {settings.redis_dir}",
        "daemonize no",
        # Durability from the append-only file, fsynced every second. No RDB snapshots: forking to
        # snapshot a large keyspace every minute took a whole core away from the services under load.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"logfile {settings.log_dir / 'redis.log'}",
    ]
    if settings.redis_password:
        lines.append(f"requirepass {_redis_conf_value(settings.redis_password.get_secret_value())}")
    conf = settings.redis_dir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: tighten it before writing
        f.write("\n".join(lines) + "\n")
    return conf


def redis_up(settings: Settings, timeout_s: float = 30.0) -> ComponentStatus:
    pid_file = settings.redis_dir / "redis.pid"
    if _read_pid(pid_file) or port_open(settings.redis_host, settings.redis_port):
        _wait_for(lambda: _redis_ping(settings), "Redis", timeout_s)
        return redis_status(settings)
    binary = _redis_binary()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    conf = _write_redis_conf(settings)
    proc = subprocess.Popen(
        [binary, str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    _wait_for(
        lambda: proc.poll() is None and _redis_ping(settings),
        "Redis",
        timeout_s,
        settings.log_dir / "redis.log",
        hide=_secrets(settings),
    )
    return redis_status(settings)


def redis_status(settings: Settings) -> ComponentStatus:
    pid = _read_pid(settings.redis_dir / "redis.pid")
    return ComponentStatus(
        "redis",
        f"{settings.redis_host}:{settings.redis_port}",
        port_open(settings.redis_host, settings.redis_port),
        pid,
        pid is not None,
    )


# ---------------------------------------------------------------------------------------------- both
def up(settings: Settings) -> list[ComponentStatus]:
    return [redis_up(settings), kafka_up(settings)]


def kafka_down(settings: Settings) -> bool:
    """Stop the broker (SIGTERM: a controlled shutdown); False if it was not running."""
    return _stop_pid(settings.kafka_dir / "kafka.pid", grace_s=30)


def redis_down(settings: Settings) -> bool:
    """Stop Redis (SIGTERM: it syncs its append-only file first); False if it was not running."""
    return _stop_pid(settings.redis_dir / "redis.pid")


def down(settings: Settings) -> list[str]:
    stopped = []
    if kafka_down(settings):
        stopped.append("kafka")
    if redis_down(settings):
        stopped.append("redis")
    return stopped


def status(settings: Settings) -> list[ComponentStatus]:
    return [redis_status(settings), kafka_status(settings)]
