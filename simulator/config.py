"""Simulation parameters, validated up front: a bad value fails with the parameter's name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feedrank.contracts import MAX_FEED_SIZE

# 2026-01-01T00:00:00Z: a fixed default start, so a seed alone fixes every timestamp.
DEFAULT_START = 1_767_225_600.0


class SimulationConfigError(ValueError):
    """An invalid simulation parameter; the message names it, e.g. ``world.n_members``."""


def _describe(prefix: str, e: Any) -> str:
    if not e["loc"]:  # a check across parameters: its message names them
        return f"{prefix}: {e['msg'].removeprefix('Value error, ')}"
    return f"{prefix}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def build(cls, prefix: str, **values: Any):
        try:
            return cls(**values)
        except ValidationError as err:
            problems = "; ".join(_describe(prefix, e) for e in err.errors())
            raise SimulationConfigError(problems) from None


class WorldConfig(_Config):
    seed: int = 0
    n_members: int = Field(5_000, ge=10, le=20_000_000)
    n_companies: int = Field(200, ge=1)
    n_courses: int = Field(300, ge=1)
    n_industries: int = Field(12, ge=1, le=64)
    n_skills: int = Field(240, ge=4)
    skills_per_member: int = Field(5, ge=1, le=32)
    n_locations: int = Field(40, ge=1)
    latent_dim: int = Field(16, ge=2, le=256)
    mean_degree: float = Field(20.0, gt=0)
    degree_exponent: float = Field(2.5, gt=2.0, le=5.0, description="tail exponent: P(degree=k) ~ k^-gamma")
    max_degree: int = Field(5_000, ge=2)
    homophily: float = Field(0.7, ge=0.0, le=1.0, description="share of edges drawn inside the industry")
    triadic_closure: float = Field(0.3, ge=0.0, lt=1.0, description="share of edges that close a triangle")
    follows_per_member: float = Field(3.0, ge=0.0)
    influencer_share: float = Field(0.01, gt=0.0, le=1.0)
    block_rate: float = Field(0.01, ge=0.0, le=1.0, description="blocks per member")
    posts_per_member: float = Field(2.0, ge=0.0)
    connections_only_share: float = Field(0.15, ge=0.0, le=1.0)
    jobs_per_company: float = Field(5.0, ge=0.0)
    horizon_days: float = Field(7.0, gt=0.0, le=365.0)
    start_time: float = Field(DEFAULT_START, gt=946_684_800.0)

    @model_validator(mode="after")
    def _consistent(self) -> WorldConfig:
        if self.mean_degree >= self.n_members:
            raise ValueError(f"mean_degree ({self.mean_degree}) must be below n_members ({self.n_members})")
        if self.max_degree < self.mean_degree:
            raise ValueError(f"max_degree ({self.max_degree}) must be at least mean_degree ({self.mean_degree})")
        return self


class SessionConfig(_Config):
    seed: int = 0
    n_requests: int = Field(20_000, ge=0)
    slate_size: int = Field(10, ge=1, le=MAX_FEED_SIZE)
    network_candidates: int = Field(15, ge=0)
    job_candidates: int = Field(10, ge=0)
    course_candidates: int = Field(8, ge=0)
    people_candidates: int = Field(7, ge=0)
    # "live": the running pipeline's feeds, with the mixer's own exploration (services/live_simulation.py)
    policy: Literal["uniform", "epsilon-greedy", "live"] = "uniform"
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="exploration rate of epsilon-greedy")
    batch_size: int = Field(4_096, ge=1)

    @model_validator(mode="after")
    def _enough_candidates(self) -> SessionConfig:
        total = self.network_candidates + self.job_candidates + self.course_candidates + self.people_candidates
        if total < self.slate_size:
            raise ValueError(f"candidates per request ({total}) must be at least slate_size ({self.slate_size})")
        return self

    @property
    def candidates_per_request(self) -> int:
        return self.network_candidates + self.job_candidates + self.course_candidates + self.people_candidates
