"""A run's lifecycle: its states, their transitions, and the one rule that settles a run from its files.

A run's state lives in its log folder: `status.json` (`{"status", "step", "reason", "val_loss",
"time"}`, written atomically, so a reader never sees half a file) and the folder's lock
(`actsweep.io.lock_run`). Every part of the package reads a run's state through this module.

    pending ──▶ running ──▶ finished | diverged        (done: kept, never retried or overwritten)
                  ▲  │
                  │  └────▶ crashed | interrupted      (a rerun resumes from the last good checkpoint)
                  └─────────────┘

`stale` (a done run whose recorded settings differ from the sweep file's, `study/records.py`) and
`busy` (another live process holds its folder) are what a launcher finds, not what a fit records.
The fit's own `RunStatus` callback (always installed by `actsweep fit`) records running, finished,
crashed and interrupted; `DivergenceGuard` records diverged; `settle` gives a process that died
without a final word its state.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from actsweep.io import write_atomic

STATUS_FILE = "status.json"
STATES = ("pending", "running", "finished", "diverged", "crashed", "interrupted", "stale", "busy")
STATUSES = ("running", "finished", "diverged", "crashed", "interrupted")  # what status.json may hold
DONE = ("finished", "diverged")  # a run's final statuses: its work is kept, never retried or overwritten
# The statuses a recorded one may move to (None: no status.json yet); a done run moves nowhere.
TRANSITIONS: dict[str | None, tuple[str, ...]] = {
    None: ("running",),
    "running": STATUSES,  # "running" again: a resume of a run that died without a final word
    "crashed": ("running",),
    "interrupted": ("running",),
    "finished": (),
    "diverged": (),
}


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


def advance(log_dir: str | os.PathLike, status: str, step: int, reason: str = "", val_loss: float | None = None) -> dict:
    """Move the run to `status` where `TRANSITIONS` allows it; returns the record now on disk (the
    old one where the move is not allowed: a diverged run stays diverged when its fit ends)."""
    current = read_status(log_dir)
    if status not in TRANSITIONS[current["status"] if current else None]:
        return current
    return write_status(log_dir, status, step, reason, val_loss)


def settle(log_dir: str | os.PathLike, returncode: int | None, reason: str = "") -> dict:
    """The one rule for a run whose process has ended: it keeps the final word it wrote; one still
    "running" (or with no record) is finished after exit 0, interrupted after a signal (negative
    code: Ctrl-C, the scheduler, the OOM killer) or when it vanished (None: a SLURM task that ended
    without a word), else crashed. `reason` says where to look. A record that cannot be written (a
    full disk) is still returned, saying so."""
    record = read_status(log_dir) or {"status": "running", "step": 0}
    if record["status"] != "running":
        return record
    step, val_loss = record.get("step", 0), record.get("val_loss")
    if returncode == 0:
        outcome, why = "finished", ""
    else:
        outcome = "interrupted" if returncode is None or returncode < 0 else "crashed"
        why = "; ".join(filter(None, [f"exit code {returncode}" if returncode is not None else "", reason]))
    try:
        return write_status(log_dir, outcome, step, why, val_loss)
    except OSError as err:  # the sweep still says what happened (the next start records it)
        return {"status": outcome, "step": step, "reason": f"{why}; {err}", "val_loss": val_loss}


def busy(log_dir: str | os.PathLike, reason: str) -> dict:
    """What a launcher reports for a run another live process holds: its record, as `busy`."""
    return {**(read_status(log_dir) or {"step": 0}), "status": "busy", "reason": reason}


def ended(log_dir: str | os.PathLike) -> str:
    """The status of a run whose fit has just ended without an exception: the done status it holds
    (diverged), else finished: the one `advance(log_dir, "finished", ...)` leaves."""
    status = (read_status(log_dir) or {}).get("status")
    return status if status in DONE else "finished"


def is_done(log_dir: str | os.PathLike) -> bool:
    return (read_status(log_dir) or {}).get("status") in DONE


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
