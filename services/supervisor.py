"""Starts and stops the pipeline's services as child processes (``feedrank serve ...``), logs to files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from feedrank.settings import Settings
from rankers.registry import load_config


def mixer_workers(settings: Settings) -> list[str]:
    """The mixer's worker processes: ``mixer``, or ``mixer-1`` ... ``mixer-N``."""
    n = settings.mixer_workers
    return ["mixer"] if n == 1 else [f"mixer-{i}" for i in range(1, n + 1)]


def pipeline_services(settings: Settings) -> list[str]:
    """Every service of the feed, FPRs as configured."""
    fprs = load_config(settings.pipeline_config).fpr_names
    return ["features", *[f"fpr-{n}" for n in fprs], *mixer_workers(settings)]


@dataclass
class Supervisor:
    settings: Settings
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log_path(self, name: str) -> Path:
        return self.settings.log_dir / f"{name}.log"

    def start(self, name: str) -> subprocess.Popen:
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "feedrank.cli", "serve", name],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.settings.child_env(),
            )
        self.procs[name] = proc
        return proc

    def start_all(self) -> list[str]:
        names = pipeline_services(self.settings)
        for n in names:
            self.start(n)
        return names

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self, grace_s: float = 15.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
