"""What a sweep's run folders hold: each run's scalars (from its TensorBoard event files), its
`run.json` and its status.

A resumed run has several event files in its folder (one per process start) that repeat the steps
between the checkpoint and the interruption; they are merged with the later write winning per step.
Tags that earlier versions wrote under other names are read under today's (`actsweep.board.RENAMED`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from actsweep.board import current_tag
from actsweep.status import read_run_info, read_status
from actsweep.study.sweep import number_or_text
from actsweep.study.records import current_runs


def event_files(run_dir: str | Path) -> list[Path]:
    return sorted(Path(run_dir).glob("events.out.tfevents.*"))


def read_scalars(run_dir: str | Path) -> dict[str, pd.Series]:
    """Tag (its current name) -> values indexed by step (sorted), merged over all event files of `run_dir`."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for path in event_files(run_dir):
        # purge_orphaned_data would drop steps that a resumed run logs again; we merge them ourselves.
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps = points.setdefault(current_tag(tag), {})
            for event in acc.Scalars(tag):
                if event.step not in steps or event.wall_time >= steps[event.step][0]:
                    steps[event.step] = (event.wall_time, event.value)
    return {
        tag: pd.Series({step: value for step, (_, value) in sorted(steps.items())}, name=tag, dtype=float)
        for tag, steps in points.items()
    }


@dataclass
class RunLog:
    """Everything the report knows about one run folder."""

    dir: Path
    info: dict[str, Any]  # run.json: name, config, overrides, seed, label, fixed, study
    status: dict[str, Any]
    scalars: dict[str, pd.Series]


def read_runs(sweep_dir: str | Path) -> list[RunLog]:
    """Run folders of a sweep (those with event files or a status, and listed in its `sweep.json` when
    it has one: runs of an earlier grid are left out), in the sweep's order."""
    current = current_runs(Path(sweep_dir))
    found = [(p, read_run_info(p)) for p in sorted(Path(sweep_dir).iterdir())
             if p.is_dir() and (current is None or p.name in current)
             and (event_files(p) or read_status(p) is not None)]
    known = {info["config"]: info for _, info in found if info}
    logs = [RunLog(p, info or info_from_name(p.name, known), read_status(p) or {}, read_scalars(p)) for p, info in found]
    return sorted(logs, key=lambda log: log.info.get("index", 0))


def info_from_name(name: str, known: dict[str, dict]) -> dict[str, Any]:
    """The run.json of a run started by hand without one: its configuration's record from the other
    runs when there is one, else the grid values its name spells (`activation=relu,seed=0`)."""
    config, _, seed = name.rpartition(",seed=")
    if not config or not seed.lstrip("-").isdigit():
        return {"name": name, "config": name, "overrides": {}, "seed": None}
    if config in known:
        return {**known[config], "name": name, "seed": int(seed)}
    pairs = [pair.split("=", 1) for pair in config.split(",")]
    overrides = {key: number_or_text(value) for key, value in pairs} if all(len(p) == 2 for p in pairs) else {}
    return {"name": name, "config": config, "overrides": overrides, "seed": int(seed)}
