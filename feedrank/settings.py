"""Every runtime setting of feedrank, defined once.

Values come from environment variables prefixed ``FEEDRANK_`` (e.g. ``FEEDRANK_KAFKA_BOOTSTRAP``),
so one process tree (a test session, a container) can be pointed elsewhere without code changes.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedrank.contracts import MAX_FEED_SIZE

if TYPE_CHECKING:
    import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET_MASK = "**********"  # what pydantic's SecretStr shows instead of a secret
# The share of a traffic dataset (in time) the FPRs learn from by default; `feedrank train spr` learns
# from the rest, so the second pass sees FPR scores of traffic the FPRs did not train on, as in serving.
FPR_SHARE = 0.6
_PASSWORD_PART = "password="


class HiddenPassword(str):
    """A connection string that works as the plain string but whose repr masks the password (its last
    ``password=`` part), so that reprs of what holds it (tracebacks, debug logs) do not show it."""

    __slots__ = ()

    def __repr__(self) -> str:
        head, sep, _ = str(self).partition("," + _PASSWORD_PART)
        return repr(head + sep + SECRET_MASK if sep else head)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEEDRANK_", extra="ignore")

    # Where local infrastructure, models and logs live (git-ignored).
    state_dir: Path = REPO_ROOT / ".feedrank"
    pipeline_config: Path = REPO_ROOT / "config" / "pipeline.toml"
    # Override where models and service logs go (default: under state_dir), e.g. per test session.
    models_path: Path | None = None
    logs_path: Path | None = None
    impressions_path: Path | None = None

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_controller_port: int = 9093
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_heap: str = "512m"
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)

    # Redis (Feast online store)
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = Field(default=0, ge=0)
    redis_password: SecretStr | None = None
    redis_ssl: bool = False

    # Feast
    feast_repo: Path = REPO_ROOT / "feature_repo"
    feast_project: str = "feedrank"

    # The feature service dead-letters an event whose event_id it read in the last this many records of
    # the same partition (a duplicate would be counted twice); 0 turns the check off.
    event_dedupe_window: int = Field(default=100_000, ge=0)
    # Prometheus metrics of the feature service (freshness, throughput) on 127.0.0.1; 0 turns them off.
    features_metrics_port: int = Field(default=9108, ge=0, le=65535)

    # Feed assembly
    feed_size: int = Field(default=20, ge=1, le=MAX_FEED_SIZE)
    # A feed is published within this long of the mixer reading its request, with whichever FPRs have
    # answered by then. Gathering stops mix_budget_ms before it (more if recent mixes were slower) to
    # leave time for scoring and re-ranking.
    gather_deadline_ms: int = Field(default=500, ge=1)
    mix_budget_ms: int = Field(default=100, ge=0)
    # FPR answers whose request the mixer has not read after this long are dead-lettered (an answer to
    # nothing, or to a request lost upstream); until then they hold back the mixer's committed offset.
    orphan_answer_ttl_s: float = Field(default=60.0, gt=0)
    # The mixer shares the rows of item and actor stats across requests for this long (0: every request
    # reads them): a feed's features are then up to this much older than Redis's, for a third less Redis work.
    shared_rows_ttl_ms: float = Field(default=250.0, ge=0)
    mixer_workers: int = Field(default=1, ge=1, le=64)  # mixer processes (at most the partition count do work)
    served_ttl_s: float = Field(default=3600.0, gt=0)  # how long the mixer remembers what it served a member
    explain_ttl_s: float = Field(default=86_400.0, ge=0)  # how long `feedrank explain` can explain a request; 0: off
    # The impression log: a served item becomes a row once the member's impression of it arrives on
    # member-events (with the feed's request_id); served items still unseen after this window are dropped.
    impression_window_s: float = Field(default=300.0, gt=0)
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    # Each FPR answer carries every candidate's scorer features too (for logging or debugging). Off by
    # default: the mixer reads only the scores, and parsing 400 candidates' features cost the mixer
    # more than scoring them.
    fpr_send_features: bool = False
    # Native threads (BLAS, OpenMP, torch) per service process: each request's matrix products are
    # small, and pools sized to the machine both slow them down and steal the other services' cores.
    service_threads: int = Field(default=1, ge=1, le=256)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_safe(cls, v: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(v) <= allowed:
            raise ValueError(f"FEEDRANK_TOPIC_PREFIX={v!r} may only hold letters, digits, '.', '_' and '-'")
        return v

    @field_validator("feast_project")
    @classmethod
    def _project_is_identifier(cls, v: str) -> str:
        if not v.replace("_", "").isalnum():
            raise ValueError(f"FEEDRANK_FEAST_PROJECT={v!r} must be letters, digits and '_' (Feast's rule)")
        return v

    # Derived locations -------------------------------------------------------------------------
    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def log_dir(self) -> Path:
        return self.logs_path or self.state_dir / "logs"

    @property
    def impression_dir(self) -> Path:
        return self.impressions_path or self.state_dir / "impressions"

    @property
    def model_dir(self) -> Path:
        return self.models_path or self.state_dir / "models"

    @property
    def feast_dir(self) -> Path:
        return self.state_dir / "feast" / self.feast_project

    @property
    def features_app_id(self) -> str:
        """The feature service's Faust app id: its consumer group, and the prefix of its table's changelog."""
        return f"{self.topic_prefix}feedrank-features"

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer, consumer and admin client."""
        cfg: dict[str, str] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            cfg["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            cfg["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            cfg["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            cfg["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return cfg

    def redis_kwargs(self) -> dict[str, object]:
        kw: dict[str, object] = {
            "host": self.redis_host,
            "port": self.redis_port,
            "db": self.redis_db,
            "ssl": self.redis_ssl,
        }
        if self.redis_password:
            kw["password"] = self.redis_password.get_secret_value()
        return kw

    def redis_client(self, fail_fast: bool = False, **options: object) -> redis.Redis:
        """A client of the configured Redis (the online store, and the mixer's shared state).

        ``fail_fast``: no retries and a short connect timeout, for the feed's path, which serves without
        Redis rather than wait for it, and for probes (redis-py's default retries back off for seconds
        per command, authentication errors included). ``options`` go to ``redis.Redis`` as they are."""
        import redis  # here, not at the top: most processes that read settings never talk to Redis

        kwargs = self.redis_kwargs()
        if fail_fast:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kwargs.update(retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.25)
        return redis.Redis(**{**kwargs, **options})  # type: ignore[arg-type]

    def feast_redis_connection_string(self) -> str:
        """Feast's ``host:port,k=v`` format; built here so the password never sits in a file.

        Feast JSON-decodes each value, so the password goes in as a JSON string (a password such as
        ``true``, ``null`` or ``"x"`` would otherwise reach Redis changed), and splits on ',', which a
        password therefore cannot hold. The result's repr hides the password (Feast's ``RepoConfig``
        and ``FeatureStore`` reprs show it)."""
        parts = [f"{self.redis_host}:{self.redis_port}", f"db={self.redis_db}"]
        if self.redis_ssl:
            parts.append("ssl=true")
        if self.redis_password:
            secret = self.redis_password.get_secret_value()
            if "," in secret:
                raise ValueError(
                    "FEEDRANK_REDIS_PASSWORD holds a ',', which Feast's Redis connection string cannot carry"
                )
            parts.append(_PASSWORD_PART + json.dumps(secret))  # last: the repr hides everything after it
        return HiddenPassword(",".join(parts))

    def child_env(self) -> dict[str, str]:
        """Environment for a child process so that it sees exactly these settings."""
        env = dict(os.environ)
        for name, value in self.model_dump().items():
            key = f"FEEDRANK_{name.upper()}"
            if value is None:
                env.pop(key, None)
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            else:
                env[key] = str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
