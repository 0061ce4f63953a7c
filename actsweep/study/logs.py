"""What a sweep's run folders hold: each run's scalars (from its TensorBoard event files), its
`run.json` and its status.

A resumed run has several event files in its folder (one per process start) that repeat the steps
between the checkpoint and the interruption; they are merged with the later write winning per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from actsweep.status import read_status
from actsweep.study.records import current_runs


def event_files(run_dir: str | Path) -> list[Path]:
    return sorted(Path(run_dir).glob("events.out.tfevents.*"))


def read_scalars(run_dir: str | Path) -> dict[str, pd.Series]:
    """Tag -> values indexed by step (sorted), merged over all event files of `run_dir`."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for path in event_files(run_dir):
        # purge_orphaned_data would drop steps that a resumed run logs again; we merge them ourselves.
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps = points.setdefault(tag, {})
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
    it has one), in the sweep's order."""
    logs, current = [], current_runs(Path(sweep_dir))
    for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        if current is not None and run_dir.name not in current:
            continue  # a run of an earlier grid, no longer part of the sweep
        if not event_files(run_dir) and read_status(run_dir) is None:
            continue
        info_file = run_dir / "run.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {
            "name": run_dir.name, "config": run_dir.name, "overrides": {}, "seed": None}
        logs.append(RunLog(run_dir, info, read_status(run_dir) or {}, read_scalars(run_dir)))
    return sorted(logs, key=lambda log: log.info.get("index", 0))
