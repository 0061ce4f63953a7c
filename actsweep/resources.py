"""The CPUs and accelerators a process may use, and how a sweep shares them among its jobs.

Bottom layer: plain functions of what the operating system and scheduler say, so that tests can
hand them any CPU set or device count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from actsweep.errors import ConfigError


def usable_cpus() -> list[int]:
    """The CPUs this process may run on: its affinity mask (`taskset`, cgroups), cut to
    `SLURM_CPUS_PER_TASK` when a SLURM task was given fewer."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return cpus[: int(slurm)] if slurm.isdigit() and int(slurm) > 0 else cpus


def host_memory() -> int:
    """Bytes of physical memory on this machine (a model is built there before it moves to a device)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse `what` when its `nbytes` exceed this machine's memory: allocating it would end in an
    allocator error (or the OOM killer) instead of a word about its size."""
    memory = host_memory()
    if nbytes > memory:
        raise ConfigError(f"{what} needs {nbytes / 2**30:.3g} GiB, more than this machine's {memory / 2**30:.3g} GiB; {fix}")


def visible_accelerators() -> list[str]:
    """Ids of the CUDA devices this process may use (as `CUDA_VISIBLE_DEVICES` would name them)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    import torch  # only when nothing says: asking CUDA is slow

    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Slot:
    """What one concurrent job of a sweep may use: its own CPUs and its own devices."""

    cpus: tuple[int, ...]
    devices: tuple[str, ...]

    def env(self) -> dict[str, str]:
        """Environment for a child process in this slot (threads are the run's own `--threads`)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.devices)}


def plan_slots(jobs: int, threads: int, devices_per_run: int, cpus: list[int], devices: list[str]) -> list[Slot]:
    """Split `cpus` and `devices` into `jobs` disjoint slots of `threads` CPUs and `devices_per_run`
    devices each, or say why they do not fit (never oversubscribe silently)."""
    if jobs < 1 or threads < 1 or devices_per_run < 0:
        raise ConfigError(f"jobs and threads must be >= 1 and devices_per_run >= 0, got {jobs}, {threads}, {devices_per_run}")
    if jobs * threads > len(cpus):
        raise ConfigError(
            f"{jobs} jobs × {threads} threads need {jobs * threads} CPUs; this process may use {len(cpus)} "
            f"({','.join(map(str, cpus))}); lower --jobs or the sweep's threads")
    if jobs * devices_per_run > len(devices):
        raise ConfigError(
            f"{jobs} jobs × {devices_per_run} devices per run need {jobs * devices_per_run} accelerators; "
            f"{len(devices)} are visible; lower --jobs or devices_per_run")
    return [Slot(tuple(cpus[i * threads:(i + 1) * threads]),
                 tuple(devices[i * devices_per_run:(i + 1) * devices_per_run])) for i in range(jobs)]
