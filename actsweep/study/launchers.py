"""Launchers: who runs a sweep's pending runs. `local` is a process pool on this machine; `slurm`
(`actsweep.study.slurm`) hands them to a SLURM job array. Both run each run through `plan.execute`,
so skipping, resuming, locking and recording are the same, and both show the same progress lines.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from actsweep.resources import Slot, plan_slots, usable_cpus, visible_accelerators
from actsweep.study.plan import PIN_VARIABLE, Launch, execute, launch_fit
from actsweep.study.sweep import Run, Sweep


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PendingTooLong(Exception):
    """A launcher's tasks waited `--max-pending` seconds with none running, and were cancelled."""


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


def slots_for(sweep: Sweep, jobs: int) -> list[Slot]:
    """One slot per concurrent job: its own CPUs (`sweep.threads` of them) and its accelerators, which
    it shares with at most `sweep.runs_per_device - 1` other jobs."""
    devices = visible_accelerators()
    per_run = sweep.devices_per_run if sweep.devices_per_run is not None else int(bool(devices))
    return plan_slots(jobs, sweep.threads, per_run, usable_cpus(), devices, sweep.runs_per_device)


def child_env(slot: Slot, threads: int) -> dict[str, str]:
    """The environment of a fit in `slot`: its devices, its CPUs (applied by `launch_fit`) and thread
    pools sized to the run's own thread count, so the numbers never depend on `--jobs`."""
    env = {**os.environ, **slot.env(), PIN_VARIABLE: ",".join(map(str, slot.cpus))}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_local(sweep: Sweep, root: Path, todo: list[Run], jobs: int = 1, launch: Launch = launch_fit) -> dict[str, dict]:
    """Run `todo` on this machine, `jobs` at a time, each in a slot of its own; returns each run's
    final status by name."""
    progress, free, results = Progress(len(todo), jobs), queue.SimpleQueue(), {}
    for slot in slots_for(sweep, jobs):
        free.put(slot)

    def one(run: Run) -> None:
        t0, slot = time.monotonic(), free.get()
        try:
            results[run.name] = execute(sweep, run, root, child_env(slot, sweep.threads), launch,
                                        lambda action: progress.start(run.name, action),
                                        {"cpus": list(slot.cpus), "devices": list(slot.devices),
                                         "runs_per_device": sweep.runs_per_device})
        finally:
            free.put(slot)
        progress.done(run.name, results[run.name], time.monotonic() - t0)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, todo))
    return results

