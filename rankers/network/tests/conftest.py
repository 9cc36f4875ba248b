"""One small simulated world and one trained scorer, shared by the network FPR's tests (seconds, not minutes)."""

from __future__ import annotations

import pytest

from evaluation.fpr_oracle import SimulatedWorld, simulate
from rankers.inventory import Inventory
from rankers.network.ranker import NetworkScorer
from rankers.network.train import train
from rankers.training import NoProgress, TrainedFpr, replay


@pytest.fixture(scope="session")
def small_world() -> SimulatedWorld:
    return simulate(members=400, requests=4000, days=3, seed=2)


@pytest.fixture(scope="session")
def trained(small_world: SimulatedWorld) -> TrainedFpr:
    return train(small_world.traffic, {}, NoProgress())


@pytest.fixture(scope="session")
def scorer(trained: TrainedFpr) -> NetworkScorer:
    assert isinstance(trained.scorer, NetworkScorer)
    return trained.scorer


@pytest.fixture(scope="session")
def final_inventory(small_world: SimulatedWorld) -> Inventory:
    """The world's inventory after every event (a service's state at the end of the log)."""
    return replay(small_world.traffic.events, small_world.traffic.log.iloc[:0], lambda inv, rows: None)
