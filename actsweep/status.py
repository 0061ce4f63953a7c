"""The run's `status.json` and `run.json` in its log folder: what a sweep runner reads to skip, resume or record a run.

Contract: `{"status": "running" | "finished" | "diverged" | "crashed" | "interrupted", "step": int,
"reason": str, "val_loss": float | null, "time": ISO-8601 UTC}`. Written atomically (a temporary file
renamed over the old one), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from actsweep.io import write_atomic

STATUS_FILE = "status.json"
DONE = ("finished", "diverged")  # a run's final statuses: its work is kept, never retried or overwritten
STATUSES = ("running", "finished", "diverged", "crashed", "interrupted")


def write_status(log_dir: str | os.PathLike, status: str, step: int, reason: str = "", val_loss: float | None = None) -> dict:
    """Atomically replace `log_dir/status.json`; returns what was written."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    record = {
        "status": status,
        "step": int(step),
        "reason": reason,
        "val_loss": val_loss,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / STATUS_FILE, json.dumps(record, indent=1).encode())
    return record


def read_status(log_dir: str | os.PathLike) -> dict | None:
    """The run's status record, or None when the run never wrote one (or it is unreadable)."""
    record = read_object(Path(log_dir) / STATUS_FILE)
    return record if record is not None and isinstance(record.get("status"), str) else None


def read_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object (a bare
    `42` is valid JSON, and no record)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# -- run.json: what a run is (its sweep, grid values, seed), whoever started it ---------------------

RUN_FILE = "run.json"


def write_run_info(log_dir: str | os.PathLike, info: dict) -> None:
    """Atomically write the run's identity (`name`, `config`, `overrides`, `seed`, `index`, `label`,
    `fixed`, `study`): the report groups runs by it, however they were launched."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / RUN_FILE, json.dumps(info, indent=1).encode())


def read_run_info(log_dir: str | os.PathLike) -> dict | None:
    return read_object(Path(log_dir) / RUN_FILE)
