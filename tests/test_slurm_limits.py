"""The SLURM launcher's words, without a cluster: partition limits parsed from `scontrol`/`sinfo` text
and the refusal of a task over them; the pending reasons shown while waiting, and `--max-pending`.
(`tests/test_slurm.py` runs the same against a real one-node SLURM.)"""

from __future__ import annotations

import math

import pytest

from actsweep.study.slurm import Pending
from actsweep.study import slurm_limits
from actsweep.study.slurm_limits import (choose, gpu_count, key_values, parse_megabytes, parse_minutes,
                                         partition_limits, partition_refusal, refusal)
from actsweep.study.slurm_settings import SlurmSettings


@pytest.mark.parametrize("text, minutes", [
    ("UNLIMITED", math.inf), ("INFINITE", math.inf), ("30", 30), ("00:30:00", 30), ("30:30", 30.5),
    ("2:30:00", 150), ("1-00:00:00", 1440), ("1-12", 2160), ("2-01:30", 2970), ("0-00:01:30", 1.5),
])
def test_slurm_times_in_minutes(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("text, megabytes", [
    ("UNLIMITED", math.inf), ("4000", 4000), ("4000M", 4000), ("21G", 21504), ("1T", 1048576), ("512K", 0.5),
    ("8g", 8192),
])
def test_slurm_memory_in_megabytes(text, megabytes):
    assert parse_megabytes(text) == megabytes


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:a100:2,gpu:v100:2", 4), ("gpu:4(S:0,1)", 4),
    ("mps:100,gpu:2", 2), ("mps:100", 0),
])
def test_gpus_of_a_node(gres, gpus):
    assert gpu_count(gres) == gpus


# `scontrol --oneliner show partition`, shortened
DEBUG = ("PartitionName=debug AllowGroups=ALL Default=YES DefaultTime=01:00:00 MaxNodes=UNLIMITED "
         "MaxTime=00:30:00 MinNodes=0 MaxCPUsPerNode=UNLIMITED Nodes=n[1-2] State=UP TotalCPUs=12 "
         "JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=12,mem=21G,node=2")
GPU = "PartitionName=gpu Default=NO MaxTime=1-00:00:00 MaxCPUsPerNode=16 MaxMemPerNode=64000 State=UP"
NODES = ["8|16000|(null)", "4|32000|(null)"]  # sinfo --Node --format '%c|%m|%G'
GPU_NODES = ["32|256000|gpu:a100:4(S:0-1)"]


def limits(line: str = DEBUG, nodes: list[str] = NODES):
    return partition_limits(key_values(line), nodes)


def test_partition_limits_are_the_tighter_of_the_partition_and_its_largest_node():
    debug, gpu = limits(), limits(GPU, GPU_NODES)
    assert (debug.name, debug.max_minutes, debug.max_cpus, debug.max_mem_mb, debug.max_gpus) == (
        "debug", 30, (8, "largest node"), (32000, "largest node"), 0)
    assert (gpu.max_minutes, gpu.max_cpus, gpu.max_mem_mb, gpu.max_gpus) == (
        1440, (16, "MaxCPUsPerNode"), (64000, "MaxMemPerNode"), 4)


@pytest.mark.parametrize("settings, message", [
    ({}, "--time 60 exceeds partition debug's MaxTime of 30 minutes; ask for --time 30 or less, "
         "or choose another --partition"),
    ({"time": 30, "cpus": 9}, "9 CPUs per task (--cpus; default: the sweep's threads) exceed the 8 of partition "
                              "debug's largest node; ask for --cpus 8 or less"),
    ({"time": 30, "mem": "40G"}, "--mem 40G exceeds the 32000M of partition debug's largest node; "
                                 "ask for --mem 32000M or less"),
    ({"time": 30, "gpus": 1}, "--gpus 1 exceeds the 0 GPUs (GRES gpu) of partition debug's largest node; "
                              "ask for --gpus 0, or choose another --partition"),
])
def test_a_task_over_a_limit_is_refused_naming_the_limit_and_the_largest_value(settings, message):
    assert refusal(SlurmSettings(**settings), 1, limits()).startswith(message)


def test_tasks_within_the_limits_pass_and_the_threads_count_as_cpus():
    assert refusal(SlurmSettings(time=30, mem="32000M", cpus=8), 1, limits()) is None
    assert refusal(SlurmSettings(time=1440, gpus=4, mem="62G"), 16, limits(GPU, GPU_NODES)) is None
    assert "17 CPUs per task" in refusal(SlurmSettings(time=60), 17, limits(GPU, GPU_NODES))
    assert "MaxMemPerNode" in refusal(SlurmSettings(time=60, mem="63G"), 1, limits(GPU, GPU_NODES))


def test_a_per_cpu_memory_limit_is_multiplied_by_the_cpus():
    line = GPU.replace("MaxMemPerNode=64000", "MaxMemPerCPU=4000")
    assert refusal(SlurmSettings(mem="16000M", cpus=4), 1, limits(line, GPU_NODES)) is None
    assert "the 8000M of partition gpu's MaxMemPerCPU × 2 CPUs" in refusal(
        SlurmSettings(mem="16G", cpus=2), 1, limits(line, GPU_NODES))


def test_the_partition_is_the_one_asked_for_or_the_default():
    records = [key_values(DEBUG), key_values(GPU)]
    assert choose(records, None)["PartitionName"] == "debug" and choose(records, "gpu")["PartitionName"] == "gpu"
    assert choose(records, "gpus") == "--partition gpus: no such partition on this cluster; partitions: debug, gpu"
    assert choose(records[1:], None).startswith("the cluster has no default partition; choose one with --partition")


def two_partitions(name: str | None):
    """`read_partition` on a cluster of partitions debug (the default) and gpu."""
    record = choose([key_values(DEBUG), key_values(GPU)], name)
    if isinstance(record, str):
        return record
    return partition_limits(record, GPU_NODES if record["PartitionName"] == "gpu" else NODES)


def test_a_task_is_refused_only_when_none_of_its_partitions_can_run_it(monkeypatch):
    monkeypatch.setattr(slurm_limits, "read_partition", two_partitions)
    assert partition_refusal(SlurmSettings(partition="debug,gpu"), 1) is None  # gpu's MaxTime is a day
    assert partition_refusal(SlurmSettings(), 1).startswith("--time 60 exceeds partition debug's MaxTime")
    assert partition_refusal(SlurmSettings(partition="debug,gpu", time=2000), 1).startswith(
        "--time 2000 exceeds partition debug's MaxTime of 30 minutes")
    assert partition_refusal(SlurmSettings(partition="gpus"), 1).startswith("--partition gpus: no such partition")
    monkeypatch.setattr(slurm_limits, "read_partition", lambda name: None)  # no scontrol: sbatch decides
    assert partition_refusal(SlurmSettings(partition="debug"), 1) is None


def test_pending_reasons_are_shown_once_per_change_with_how_long():
    pending, down = Pending(None, now=0), {"1_0": ("PENDING", "PartitionDown"), "1_1": ("PENDING", "PartitionDown")}
    assert pending.update({job: ("PENDING", "None") for job in down}, 0) is None  # not yet looked at
    assert pending.update(down, 2) == ("      pending: 2 runs for 2s (PartitionDown: the partition is down; "
                                       "the tasks start once it is up)")
    assert pending.update(down, 4) is None
    line = pending.update({"1_0": ("RUNNING", "None"), "1_1": ("PENDING", "Resources")}, 70)
    assert line == "      pending: 1 run for 1m10s (Resources: waiting for free CPUs, memory or GPUs)"


def test_max_pending_counts_only_the_time_with_no_task_running():
    pending = Pending(10, now=0)
    behind = {"1_0": ("RUNNING", "None"), "1_1": ("PENDING", "JobArrayTaskLimit")}
    pending.update(behind, 30)
    assert pending.overdue(30) is None  # pending behind a running task is not stuck
    pending.update({"1_1": ("PENDING", "Priority")}, 35)
    assert pending.overdue(40) is None
    assert pending.overdue(41) == "1 run pending with none running for 11s, over --max-pending 10 (Priority)"
    assert Pending(None, now=0).overdue(1e9) is None
