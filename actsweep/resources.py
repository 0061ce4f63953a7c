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


RUNS_PER_DEVICE = 1  # jobs that share each device (group of `devices_per_run`): by default none share


def device_groups(devices: list[str], devices_per_run: int) -> list[tuple[str, ...]]:
    """`devices` cut into the disjoint groups of `devices_per_run` that a run is given (none when 0)."""
    count = len(devices) // devices_per_run if devices_per_run else 0
    return [tuple(devices[g * devices_per_run:(g + 1) * devices_per_run]) for g in range(count)]


def group_of(job: int, groups: int) -> int:
    """The device group of slot `job`: round-robin, so that jobs spread over every device before any
    device takes a second one, and `jobs <= groups` places them as with one run per device."""
    return job % groups


def check_device_slots(jobs: int, devices_per_run: int, runs_per_device: int, groups: int, visible: int) -> None:
    """Refuse more jobs than device slots (groups × runs_per_device): never oversubscribe silently."""
    if devices_per_run and not groups:  # not one run fits, whatever --jobs or --runs-per-device
        raise ConfigError(
            f"devices_per_run {devices_per_run} needs {devices_per_run} accelerator(s) a run; {visible} are visible; "
            "leave devices_per_run out (1 where any is visible, else 0: CPUs only) or lower it")
    if devices_per_run and jobs > groups * runs_per_device:
        need = -(-jobs // runs_per_device) * devices_per_run  # ceil(jobs / K) groups
        raise ConfigError(
            f"{jobs} jobs × {devices_per_run} devices per run, {runs_per_device} run(s) per device, need {need} "
            f"accelerators; {visible} are visible; lower --jobs or devices_per_run, or raise --runs-per-device")


def plan_slots(jobs: int, threads: int, devices_per_run: int, cpus: list[int], devices: list[str],
               runs_per_device: int = RUNS_PER_DEVICE) -> list[Slot]:
    """Split `cpus` into `jobs` disjoint slots of `threads` CPUs, and give each slot a group of
    `devices_per_run` devices that at most `runs_per_device` slots share (round-robin, `group_of`),
    or say why they do not fit."""
    if jobs < 1 or threads < 1 or devices_per_run < 0 or runs_per_device < 1:
        raise ConfigError(f"jobs, threads and runs_per_device must be >= 1 and devices_per_run >= 0, "
                          f"got {jobs}, {threads}, {runs_per_device}, {devices_per_run}")
    if jobs * threads > len(cpus):
        raise ConfigError(
            f"{jobs} jobs × {threads} threads need {jobs * threads} CPUs; this process may use {len(cpus)} "
            f"({','.join(map(str, cpus))}); lower --jobs or the sweep's threads")
    groups = device_groups(devices, devices_per_run)
    check_device_slots(jobs, devices_per_run, runs_per_device, len(groups), len(devices))
    return [Slot(tuple(cpus[i * threads:(i + 1) * threads]), groups[group_of(i, len(groups))] if groups else ())
            for i in range(jobs)]
