"""Does a task fit its partition? The partition's limits, read from `scontrol` and `sinfo`, against
the launcher settings, before anything is submitted: a task over a limit would pend forever (e.g.
`PartitionTimeLimit`) or be refused by sbatch after the sweep folder was made.

The parsers are pure functions of SLURM's text (tested by hand cases); `read_partition` asks the
cluster, and `refusal` says which limit a task breaks and the largest value allowed.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass

from actsweep.study.slurm_settings import SlurmSettings

UNLIMITED = {"UNLIMITED", "INFINITE", "NONE"}
MEGABYTES = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_minutes(text: str) -> float:
    """A SLURM time (`MaxTime`, `--time`) in minutes: "30", "30:15" (min:s), "2:30:00" (h:min:s),
    "1-12" (days-h), "1-12:30", "1-00:00:00"; "UNLIMITED" is infinite."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return math.inf
    days, dash, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if dash:  # after days the first field is hours: h, h:min, h:min:s
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # min, min:s
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    return int(days or 0) * 24 * 60 + hours * 60 + minutes + seconds / 60


def parse_count(text: str) -> float:
    """A SLURM count limit (`MaxCPUsPerNode`): "16"; "UNLIMITED" is infinite."""
    return math.inf if text.strip().upper() in UNLIMITED else int(text)


def parse_megabytes(text: str) -> float:
    """A SLURM memory size in MB: "4000" and "4000M" are MB, "500K", "21G", "1T"; "UNLIMITED" is infinite."""
    text = text.strip().upper()
    if text in UNLIMITED:
        return math.inf
    unit = text[-1] if text[-1] in MEGABYTES else "M"
    return float(text.rstrip("KMGT")) * MEGABYTES[unit]


def gpu_count(gres: str) -> int:
    """GPUs in a node's GRES: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:a100:2,gpu:v100:2" (4); "(null)" is 0."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres.strip()))


def key_values(line: str) -> dict[str, str]:
    """`scontrol -o show ...` one-line records: "Key=Value Key=Value ..."."""
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


@dataclass(frozen=True)
class Partition:
    """What one task (one node) can have on a partition; infinite where nothing limits it."""

    name: str
    max_minutes: float
    max_cpus: tuple[float, str]  # (the limit, the name of what sets it)
    max_mem_mb: tuple[float, str]  # per node; a per-CPU limit is multiplied out in `mem_limit`
    mem_per_cpu_mb: float
    max_gpus: int


def tightest(*limits: tuple[float, str]) -> tuple[float, str]:
    return min(limits, key=lambda limit: limit[0])


def partition_limits(fields: dict[str, str], nodes: list[str]) -> Partition:
    """From the partition's `scontrol -o show partition` fields and its nodes' `sinfo` lines
    ("CPUs|memory MB|GRES"): the largest node bounds what one task can get."""
    cpus, mems, gpus = zip(*(node.split("|", 2) for node in nodes)) if nodes else ((), (), ())
    largest = "largest node"
    return Partition(
        name=fields["PartitionName"],
        max_minutes=parse_minutes(fields.get("MaxTime", "UNLIMITED")),
        max_cpus=tightest((parse_count(fields.get("MaxCPUsPerNode", "UNLIMITED")), "MaxCPUsPerNode"),
                          (max(map(int, cpus), default=math.inf), largest)),
        max_mem_mb=tightest((parse_megabytes(fields.get("MaxMemPerNode", "UNLIMITED")), "MaxMemPerNode"),
                            (max(map(parse_megabytes, mems), default=math.inf), largest)),
        mem_per_cpu_mb=parse_megabytes(fields.get("MaxMemPerCPU", "UNLIMITED")),
        max_gpus=max(map(gpu_count, gpus), default=0),
    )


def mem_limit(partition: Partition, cpus: int) -> tuple[float, str]:
    per_cpu = (partition.mem_per_cpu_mb * cpus, f"MaxMemPerCPU × {cpus} CPUs")
    return tightest(partition.max_mem_mb, per_cpu)


def refusal(settings: SlurmSettings, threads: int, partition: Partition, tasks: int = 1) -> str | None:
    """Why a task of `settings` (`tasks` processes per node) can never start on `partition` (the
    limit and the largest value allowed), or None when it fits."""
    name, other = partition.name, "or choose another --partition"
    cpus = settings.cpus or threads
    if settings.time > partition.max_minutes:
        most = math.floor(partition.max_minutes)
        return (f"--time {settings.time} exceeds partition {name}'s MaxTime of {most} minutes; "
                f"ask for --time {most} or less, {other}")
    limit, source = partition.max_cpus
    if cpus > limit:
        return (f"{cpus} CPUs per task (--cpus; default: the sweep's threads) exceed the {int(limit)} of partition "
                f"{name}'s {source}; ask for --cpus {int(limit)} or less, {other}")
    if cpus * tasks > limit:
        return (f"{tasks} processes per node (devices_per_run) × {cpus} CPUs each exceed the {int(limit)} CPUs of "
                f"partition {name}'s {source}; lower devices_per_run or --cpus, {other}")
    limit, source = mem_limit(partition, cpus)
    if settings.mem is not None and parse_megabytes(settings.mem) > limit:
        return (f"--mem {settings.mem} exceeds the {math.floor(limit)}M of partition {name}'s {source}; "
                f"ask for --mem {math.floor(limit)}M or less, {other}")
    if settings.gpus > partition.max_gpus:
        most = partition.max_gpus
        return (f"--gpus {settings.gpus} exceeds the {most} GPUs (GRES gpu) of partition {name}'s largest node; "
                f"ask for --gpus {most}{' or less' if most else ''}, {other}")
    return None


def ask(*command: str) -> str | None:
    """A SLURM command's output; None when it is missing or fails (then sbatch has the last word)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def choose(records: list[dict[str, str]], wanted: str | None) -> dict[str, str] | str:
    """The record of partition `wanted` (None: the cluster's default), or why there is none."""
    names = ", ".join(r["PartitionName"] for r in records)
    if wanted is None:
        default = [r for r in records if r.get("Default") == "YES"]
        return default[0] if default else f"the cluster has no default partition; choose one with --partition ({names})"
    chosen = [r for r in records if r["PartitionName"] == wanted]
    return chosen[0] if chosen else f"--partition {wanted}: no such partition on this cluster; partitions: {names}"


def read_partition(wanted: str | None) -> Partition | str | None:
    """The limits of partition `wanted` (None: the default one), a refusal when there is no such
    partition, or None when the cluster cannot be asked."""
    listing = ask("scontrol", "--all", "--oneliner", "show", "partition")
    records = [key_values(line) for line in (listing or "").splitlines() if "PartitionName=" in line]
    if not records:
        return None
    record = choose(records, wanted)
    if isinstance(record, str):
        return record
    nodes = ask("sinfo", "--noheader", "--Node", "--partition", record["PartitionName"], "--format", "%c|%m|%G")
    try:
        return partition_limits(record, (nodes or "").splitlines())
    except ValueError:  # text this parser does not know: sbatch judges the request instead
        return None


def partition_refusal(settings: SlurmSettings, threads: int, tasks: int = 1) -> str | None:
    """Why a task of `settings` can start on none of the partitions it names (`--partition a,b`: any
    of them; none: the default one), or None when one fits or the cluster cannot be asked."""
    reasons = []
    for name in settings.partition.split(",") if settings.partition else [None]:
        partition = read_partition(name)
        if partition is None:
            return None
        reasons.append(partition if isinstance(partition, str) else refusal(settings, threads, partition, tasks))
    return None if None in reasons else reasons[0]
