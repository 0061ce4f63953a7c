"""The `Launcher` protocol and its two implementations: `LocalLauncher` (a process pool on this
machine, `launchers.py`) and `SlurmLauncher` (a SLURM job array, `slurm.py`, whose submitit is
imported only when it is chosen). `runner.py` picks one, once (`launcher_for`), and asks it three things.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from actsweep.study.launchers import run_local, slots_for
from actsweep.study.plan import fit_command, plan, run_dir_of
from actsweep.study.slurm_settings import SlurmSettings
from actsweep.study.sweep import Run, Sweep


class Launcher(Protocol):
    """Who runs a sweep's pending runs."""

    after_interrupt: str  # what a Ctrl-C leaves running, for the message
    shares_devices: bool  # whether runs may share a device (`runs_per_device` > 1)

    def check(self, sweep: Sweep) -> None:
        """Refuse (a `SweepError`) a sweep this launcher cannot run, before anything runs or is deleted."""

    def dry_run(self, sweep: Sweep, root: Path, todo: list[Run], restarting: set[str]) -> None:
        """Print what would run, running nothing (runs named in `restarting` start over: no resume)."""

    def run(self, sweep: Sweep, root: Path, todo: list[Run]) -> dict[str, dict]:
        """Run `todo` through `plan.execute`; each run's final status by name."""


@dataclass(frozen=True)
class LocalLauncher:
    """A pool of `jobs` fits on this machine, each pinned to its own CPUs (and device slot)."""

    jobs: int
    after_interrupt = ""
    shares_devices = True

    def check(self, sweep: Sweep) -> None:
        slots_for(sweep, self.jobs)

    def dry_run(self, sweep: Sweep, root: Path, todo: list[Run], restarting: set[str]) -> None:
        for run in todo:
            resume = None if run.name in restarting else plan(run_dir_of(sweep, run, root))[1]
            print(shlex.join(["actsweep", *fit_command(sweep, run, root, resume)[3:]]))

    def run(self, sweep: Sweep, root: Path, todo: list[Run]) -> dict[str, dict]:
        return run_local(sweep, root, todo, self.jobs)


@dataclass(frozen=True)
class SlurmLauncher:
    """One SLURM job array (`actsweep.study.slurm`; submitit is imported only when it is chosen)."""

    settings: SlurmSettings
    after_interrupt = " (submitted SLURM jobs go on; a rerun waits for them)"
    shares_devices = False  # each array task is one run in an allocation of its own

    def check(self, sweep: Sweep) -> None:
        from actsweep.study.slurm import check_submission

        check_submission(self.settings, sweep)

    def dry_run(self, sweep: Sweep, root: Path, todo: list[Run], restarting: set[str]) -> None:
        from actsweep.study.slurm import dry_run

        dry_run(sweep, root, todo, self.settings, restarting)

    def run(self, sweep: Sweep, root: Path, todo: list[Run]) -> dict[str, dict]:
        from actsweep.study.slurm import run_slurm

        return run_slurm(sweep, root, todo, self.settings)


def launcher_for(name: str, jobs: int, settings: SlurmSettings) -> Launcher:
    """The launcher `--launcher NAME` chooses."""
    return SlurmLauncher(settings) if name == "slurm" else LocalLauncher(jobs)
