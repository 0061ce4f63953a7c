"""What a sweep's folder remembers, so that no result is reused under settings it was not made with.

- Each run's `run.json` holds `settings`: the sha256 of the base config's content, the sweep's
  `fixed` overrides, `threads` and `devices_per_run`, the run's grid values and seed. A rerun whose
  sweep file gives a run other settings finds it stale: `stale_runs` says what changed, and the
  runner neither skips nor resumes it (`--restart-stale` starts it afresh). A run with no record
  (started by hand) is taken as the sweep's.
- `sweep.json` lists the sweep's current runs; the report reads only those, so runs of an earlier
  grid (a misspelt key, since fixed) do not stay in it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from actsweep.io import sha256_file, write_atomic
from actsweep.status import read_run_info
from actsweep.study.sweep import Run, Sweep

MANIFEST = "sweep.json"


@cache
def _content_sha256(path: Path, stamp: tuple[int, int]) -> str:
    return sha256_file(path)


def run_settings(sweep: Sweep, run: Run) -> dict[str, Any]:
    """Everything of the sweep file that a run's results depend on, as JSON reads it back."""
    stat = sweep.base.stat()
    settings = {"base_sha256": _content_sha256(sweep.base.resolve(), (stat.st_size, stat.st_mtime_ns)),
                "fixed": sweep.fixed, "threads": sweep.threads, "devices_per_run": sweep.devices_per_run,
                "overrides": run.overrides, "seed": run.seed}
    return json.loads(json.dumps(settings))


def settings_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """What differs between a run's recorded settings and its settings now; None when nothing does.
    Only what was recorded is compared (a run from before settings were recorded has its `fixed`,
    grid values, threads and seed; one started by hand without `run.json`, nothing)."""
    if not old:
        return None
    changes = ["base config content changed"] if old.get("base_sha256", new["base_sha256"]) != new["base_sha256"] else []
    for group in ("fixed", "overrides"):
        before, now = old.get(group, new[group]) or {}, new[group]
        changes += [f"{key}: {before.get(key, 'unset')} -> {now.get(key, 'unset')}"
                    for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    changes += [f"{key}: {old[key]} -> {new[key]}" for key in ("threads", "devices_per_run", "seed")
                if key in old and old[key] != new[key]]
    return "; ".join(changes) or None


def recorded_settings(run_dir: Path) -> dict[str, Any] | None:
    info = read_run_info(run_dir) or {}
    if isinstance(info.get("settings"), dict):
        return info["settings"]
    return {k: info[k] for k in ("fixed", "overrides", "threads", "seed") if k in info}


def stale_runs(sweep: Sweep, root: Path) -> dict[str, str]:
    """Runs whose folder holds work done under other settings than the sweep's now: name -> change."""
    stale = {}
    for run in sweep.runs():
        run_dir = root / sweep.name / run.name
        if run_dir.is_dir():
            change = settings_change(recorded_settings(run_dir), run_settings(sweep, run))
            if change:
                stale[run.name] = change
    return stale


def stale_message(stale: dict[str, str], sweep_dir: Path) -> str:
    shown = "; ".join(f"{name} ({change})" for name, change in list(stale.items())[:3])
    more = f"; and {len(stale) - 3} more" if len(stale) > 3 else ""
    return (f"{len(stale)} run(s) in {sweep_dir} were made with other settings than the sweep file's now: "
            f"{shown}{more}. Rerun with --restart-stale to start them afresh, or give the sweep another name to keep them")


def write_manifest(sweep: Sweep, root: Path) -> None:
    folder = root / sweep.name
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / MANIFEST, json.dumps({"runs": [run.name for run in sweep.runs()]}, indent=1).encode())


def current_runs(sweep_dir: Path) -> set[str] | None:
    """The run names of the sweep's latest invocation, or None when it left no manifest."""
    try:
        return set(json.loads((sweep_dir / MANIFEST).read_text())["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
