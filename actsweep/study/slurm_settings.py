"""What `--launcher slurm` asks the scheduler for: the sweep file's `launcher:` section, each setting
overridable on the command line (`--partition gpu --time 120 ...`). One array task is one run: on
`nodes` nodes, with one process (SLURM task) per device of the run on each (the sweep's
`devices_per_run`, at least 1), which Lightning's `SLURMEnvironment` joins under DDP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from actsweep.errors import ConfigError


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class SlurmSettings:
    partition: str | None = setting(None, "partition (queue) to submit to; default: the cluster's default partition")
    time: int = setting(60, "time limit of each task in minutes; a run that needs longer is requeued "
                            "from its checkpoint (see signal_delay)")
    gpus: int = setting(0, "GPUs per node of a run (--gpus-per-node); one run trains on all of them")
    cpus: int | None = setting(None, "CPUs per process (--cpus-per-task); default: the sweep's threads per run")
    nodes: int = setting(1, "nodes per run (--nodes); a run trains under DDP on nodes × devices_per_run "
                            "processes (--ntasks-per-node: the sweep's devices_per_run, default 1)")
    mem: str | None = setting(None, "memory per task (--mem), e.g. 8G; default: the cluster's")
    account: str | None = setting(None, "account to charge (--account)")
    qos: str | None = setting(None, "quality of service (--qos)")
    parallel: int = setting(256, "tasks of the array running at once (--array=...%%N)")
    signal_delay: int = setting(90, "seconds before the time limit at which SLURM warns the task (USR2): "
                                    "it saves last.ckpt and is requeued")
    max_pending: int | None = setting(None, "seconds to wait while no task runs and some pend (e.g. PartitionDown, "
                                            "Resources); then the sweep cancels its jobs and exits; default: no bound")
    sbatch: dict[str, Any] = setting(None, "other sbatch options, e.g. {constraint: a100, exclude: node3}; "
                                           "on the command line KEY=VALUE, repeatable")

    def __post_init__(self) -> None:
        if self.sbatch is None:
            self.sbatch = {}
        for name, low in (("time", 1), ("gpus", 0), ("cpus", 1), ("nodes", 1), ("parallel", 1), ("signal_delay", 0), ("max_pending", 1)):
            value = getattr(self, name)
            if name in ("cpus", "max_pending") and value is None:  # None: the default (the sweep's threads, no bound)
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"launcher setting {name!r} is a whole number ≥ {low}, got {value!r}")
        for name in ("partition", "account", "qos"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"launcher setting {name!r} is text, got {getattr(self, name)!r}")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(self.mem)):
            raise ConfigError(f"launcher setting 'mem' is a size like 8G or 500M, got {self.mem!r}")
        if not isinstance(self.sbatch, dict) or not all(re.fullmatch(r"[a-z][a-z0-9_-]*", str(k)) for k in self.sbatch):
            raise ConfigError(f"launcher setting 'sbatch' maps sbatch option names (e.g. constraint) to values, "
                              f"got {self.sbatch!r}")

    @classmethod
    def from_spec(cls, spec: dict | None) -> SlurmSettings:
        """From a sweep file's `launcher:` mapping; an unknown key is an error naming the allowed ones."""
        spec = dict(spec or {})
        allowed = [f.name for f in fields(cls)]
        unknown = [key for key in spec if key not in allowed]
        if unknown:
            raise ConfigError(f"unknown launcher setting {unknown[0]!r}; allowed: {', '.join(allowed)}")
        if "mem" in spec and spec["mem"] is not None:
            spec["mem"] = str(spec["mem"])
        return cls(**spec)

    def submitit_parameters(self, threads: int, tasks_per_node: int = 1) -> dict[str, Any]:
        """`submitit.SlurmExecutor.update_parameters` keywords (None: leave to the cluster) for runs of
        `threads` torch threads per process, `tasks_per_node` processes on each of `nodes` nodes."""
        spans = {"nodes": self.nodes, "ntasks_per_node": tasks_per_node}
        chosen = {"partition": self.partition, "time": self.time, "cpus_per_task": self.cpus or threads, "mem": self.mem,
                  **{k: v for k, v in spans.items() if v > 1},  # 1: submitit's default, left out of the script
                  "gpus_per_node": self.gpus or None, "account": self.account, "qos": self.qos,
                  "array_parallelism": self.parallel, "signal_delay_s": self.signal_delay,
                  "additional_parameters": dict(self.sbatch)}
        return {k: v for k, v in chosen.items() if v is not None}
