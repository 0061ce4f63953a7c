"""What a sweep's folder remembers, so that no result is reused under settings it was not made with.

- Each run's `run.json` holds `settings`: the sha256 of the base config's content and of every
  config file it includes (`model: model.yaml`, as jsonargparse reads it), the identity of its corpus
  (each file's content hash; for a large file its size, mtime and sampled blocks) and of its
  tokenizer file, the sweep's `fixed` overrides, `threads` and `devices_per_run`, the run's grid
  values and seed; not how it was placed (`--jobs`, `runs_per_device`, its CPUs and devices), which
  its numbers do not depend on. A rerun whose sweep file gives a run other settings finds it
  stale: `stale_runs` says what changed, and the runner neither skips nor resumes it
  (`--restart-stale` starts it afresh). A run with no record (started by hand) is taken as the sweep's.
- `sweep.json` lists the sweep's current runs; the report reads only those, so runs of an earlier
  grid (a misspelt key, since fixed) do not stay in it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from actsweep.errors import ActSweepError
from actsweep.io import sample_sha256, sha256_file, write_atomic
from actsweep.status import read_run_info
from actsweep.study.sweep import Run, Sweep

MANIFEST = "sweep.json"


@cache
def _content_sha256(path: Path, stamp: tuple[int, int]) -> str:
    return sha256_file(path)


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
FULL_HASH_BYTES = 256 << 20  # corpus files up to this size are hashed whole
DATA_SOURCES = ("source", "val_source", "test_source")


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _content_sha256(path.resolve(), (stat.st_size, stat.st_mtime_ns))


def file_identity(path: Path) -> list:
    """What changes when the file's content does: its hash; for a large one (a multi-GB corpus read
    on every sweep start) its size, mtime and sampled blocks."""
    stat = path.stat()
    if stat.st_size <= FULL_HASH_BYTES:
        return [stat.st_size, file_sha256(path)]
    return [stat.st_size, stat.st_mtime_ns, sample_sha256(path)]


def included_config(value: str, folder: Path) -> Path | None:
    """The config file that a string value includes, as jsonargparse reads `model: model.yaml`
    (relative to the including file, else to the working directory): a mapping in a .yaml/.json file."""
    if not value.endswith(CONFIG_SUFFIXES):
        return None
    for path in (folder / value, Path(value)):
        if path.is_file():
            try:
                return path if isinstance(yaml.safe_load(path.read_text()), dict) else None
            except (OSError, yaml.YAMLError):
                return None
    return None


def resolve_includes(value: Any, folder: Path, included: list[Path]) -> Any:
    """`value` (a loaded config) with each included file's content in place of its name, recursively;
    the files read are appended to `included`."""
    if isinstance(value, dict):
        return {key: resolve_includes(item, folder, included) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_includes(item, folder, included) for item in value]
    path = included_config(value, folder) if isinstance(value, str) else None
    if path is None or path.resolve() in (p.resolve() for p in included):
        return value
    included.append(path)
    return resolve_includes(yaml.safe_load(path.read_text()), path.parent, included)


def data_settings(sweep: Sweep, run: Run, included: list[Path]) -> dict[str, Any]:
    """The run's `data` section: the base config's (includes read), then the command line's `data.*`."""
    config = resolve_includes(yaml.safe_load(sweep.base.read_text()) or {}, sweep.base.parent, included)
    data = dict(config.get("data") or {}) if isinstance(config, dict) else {}
    for key, value in {**sweep.fixed, **run.overrides, **sweep.forced}.items():
        if key.startswith("data."):
            data[key.removeprefix("data.")] = value
    return data


def corpus_identity(source: str) -> Any:
    """Each local file of the source with `file_identity`; the stdlib or a hub name as the data module
    fingerprints them; a source that cannot be found as such (the fit will say why)."""
    from actsweep.data import sources  # only what a run names

    try:
        if sources.source_kind(source) != "files":
            return sources.fingerprint(source)
        return [[str(path), *file_identity(path)] for path in sources.local_files(source)]
    except ActSweepError as err:
        return f"unavailable ({err})"


def tokenizer_identity(name: str) -> Any:
    """A tokenizer file's identity (`hf:path/to/tokenizer.json`); a named tokenizer is its name."""
    spec = Path(name.removeprefix("hf:")).expanduser()
    path = spec / "tokenizer.json" if spec.is_dir() else spec
    return [name, *file_identity(path)] if name.startswith("hf:") and path.is_file() else name


def staleness_settings(sweep: Sweep, run: Run) -> dict[str, Any]:
    """Everything of the sweep file and of the files it names that a run's results depend on, as
    JSON reads it back: a run recorded with other settings is stale."""
    included: list[Path] = []
    data = data_settings(sweep, run, included)
    settings = {"base_sha256": file_sha256(sweep.base),
                "included_sha256": {str(path): file_sha256(path) for path in included},
                "corpus": {key: corpus_identity(str(data[key])) for key in DATA_SOURCES if data.get(key)},
                "tokenizer": tokenizer_identity(str(data.get("tokenizer", ""))),
                "fixed": sweep.fixed, "threads": sweep.threads, "devices_per_run": sweep.devices_per_run,
                "overrides": run.overrides, "seed": run.seed}
    return json.loads(json.dumps(settings))


# Recorded since issue 26: changes that no sweep file shows, said in words (a run from before has none).
HIDDEN_CHANGES = {"included_sha256": "an included config file changed", "corpus": "the corpus changed",
                  "tokenizer": "the tokenizer file changed"}


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
    changes += [what for key, what in HIDDEN_CHANGES.items() if key in old and old[key] != new[key]]
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
            change = settings_change(recorded_settings(run_dir), staleness_settings(sweep, run))
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
