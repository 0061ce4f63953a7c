"""What a sweep's run folders hold: each run's scalars (from its TensorBoard event files), its
`run.json` and its status.

A resumed run has several event files in its folder (one per process start) that repeat the steps
between the checkpoint and the interruption; they are merged with the later write winning per step.
Tags that earlier versions wrote under other names are read under today's (`actsweep.board.RENAMED`).

An event file that cannot be read whole (a record cut short, a damaged record header) would give a
result that is not the run's: such a run is `unreadable` (warned, its scalars left out, listed in the
report), never reported from what could be read. A running fit's last record may be half flushed:
that one is not damage.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from actsweep.board import current_tag
from actsweep.status import read_run_info, read_status
from actsweep.study.sweep import number_or_text
from actsweep.study.records import current_runs


def event_files(run_dir: str | Path) -> list[Path]:
    return sorted(Path(run_dir).glob("events.out.tfevents.*"))


RECORD_HEADER = 12  # TFRecord framing: uint64 length, uint32 masked CRC32C of the length
RECORD_FOOTER = 4  # uint32 masked CRC32C of the data


def event_file_problem(path: Path, live: bool = False) -> str | None:
    """Why the event file at `path` cannot be read whole, or None. Walks the record framing (cheap:
    the data is skipped); `live`: a running fit writes it, so a last record cut short is in flight."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                header = f.read(RECORD_HEADER)
                (length,) = struct.unpack("<Q", header[:8]) if len(header) == RECORD_HEADER else (size,)
                end = offset + RECORD_HEADER + length + RECORD_FOOTER
                if end > size:
                    return None if live else f"{path.name} is cut short in the record at byte {offset} of {size}"
                if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
                    return f"{path.name} has a damaged record header at byte {offset}"
                offset = f.seek(end)
    except OSError as err:
        return f"{path.name} cannot be read ({err.strerror or err})"
    return None


def events_problem(run_dir: str | Path, live: bool = False) -> str | None:
    """The first problem of the run's event files (see `event_file_problem`), or None."""
    files = event_files(run_dir)
    return next(filter(None, (event_file_problem(path, live and path == files[-1]) for path in files)), None)


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
    unreadable: str | None = None  # why its event files cannot be read whole; then no scalars


def read_runs(sweep_dir: str | Path) -> list[RunLog]:
    """Run folders of a sweep (those with event files or a status, and listed in its `sweep.json` when
    it has one: runs of an earlier grid are left out), in the sweep's order."""
    current = current_runs(Path(sweep_dir))
    found = [(p, read_run_info(p)) for p in sorted(Path(sweep_dir).iterdir())
             if p.is_dir() and (current is None or p.name in current)
             and (event_files(p) or read_status(p) is not None)]
    known = {info["config"]: info for _, info in found if info}
    logs = [read_run(p, info or info_from_name(p.name, known)) for p, info in found]
    return sorted(logs, key=lambda log: log.info.get("index", 0))


def read_run(run_dir: Path, info: dict[str, Any]) -> RunLog:
    """One run folder; unreadable event files leave it without scalars, with a warning."""
    status = read_status(run_dir) or {}
    problem = events_problem(run_dir, live=status.get("status") == "running")
    if problem:
        warnings.warn(f"{run_dir.name}: {problem}; its results are left out (unreadable)", stacklevel=3)
        return RunLog(run_dir, info, status, {}, problem)
    return RunLog(run_dir, info, status, read_scalars(run_dir))


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
