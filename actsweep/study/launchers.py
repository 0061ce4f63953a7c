"""Launchers: who runs a sweep's pending runs. `local` is a process pool on this machine; `slurm`
(`actsweep.study.slurm`) hands them to a SLURM job array. Both run each run through `plan.execute`,
so skipping, resuming, locking and recording are the same, and both show the same progress lines.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from actsweep.study.plan import Launch, execute, launch_fit
from actsweep.study.sweep import Run, Sweep


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """'[3/8] running <run> | elapsed 2m10s | ETA 4m' lines, ETA from the mean run time so far."""

    def __init__(self, total: int, jobs: int) -> None:
        self.total, self.jobs, self.started, self.durations = total, jobs, 0, []
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def _eta(self) -> str:
        if not self.durations:
            return "?"
        left = self.total - len(self.durations)
        return clock(sum(self.durations) / len(self.durations) * left / self.jobs)

    def start(self, name: str, action: str) -> None:
        with self.lock:
            self.started += 1
            elapsed = clock(time.monotonic() - self.t0)
            print(f"[{self.started}/{self.total}] {action} {name} | elapsed {elapsed} | ETA {self._eta()}", flush=True)

    def done(self, name: str, status: dict, seconds: float) -> None:
        with self.lock:
            self.durations.append(seconds)
            reason = f" ({status.get('reason')})" if status.get("reason") else ""
            print(f"      {status.get('status')} {name} in {clock(seconds)}{reason}", flush=True)


def child_env(jobs: int) -> dict[str, str]:
    """Share the cores: jobs × threads per job ≤ cores (a user's own OMP_NUM_THREADS wins)."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


def run_local(sweep: Sweep, root: Path, todo: list[Run], jobs: int = 1, launch: Launch = launch_fit) -> dict[str, dict]:
    """Run `todo` on this machine, `jobs` at a time; returns each run's final status by name."""
    progress, env, results = Progress(len(todo), jobs), child_env(jobs), {}

    def one(run: Run) -> None:
        t0 = time.monotonic()
        results[run.name] = execute(sweep, run, root, env, launch, lambda action: progress.start(run.name, action))
        progress.done(run.name, results[run.name], time.monotonic() - t0)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))
    return results
