"""Sweep files: a base config, a grid of dotted overrides and seeds, expanded into named runs.

A sweep file (YAML)::

    name: quickstart                 # folder under --root (default lightning_logs/sweeps)
    base: configs/quickstart.yaml    # fit config; a relative path is relative to the working directory
    grid:                            # dotted fit overrides, full cartesian product ...
      model.activation: [relu, gelu]
      model.norm: [layernorm, none]
    # ... or a list of such mappings: the union of their products (e.g. extra variants); a part
    # may name its own `seeds: [...]` (a comparison that needs more seeds for its power)
    seeds: [0, 1]
    fixed: {trainer.max_steps: 300}  # optional: overrides applied to every run
    study: blog                      # optional: blog | revival, published numbers in the report
    labels:                          # optional: a display name for the runs matching some values
      SM+LN+G: {model.norm: layernorm, model.activation: gelu}
    comparisons:                     # optional: paired differences a − b of the report (default: for
      - {key: model.activation, a: relu, b: gelu}   # each grid key, every value against the first)
      # options: metric, primary: true (adjusted together with the other primary ones), family: NAME,
      # equivalence: δ (TOST bound), label, and across: {key, a, b} for an interaction, e.g.
      # (relu − gelu at lr 1e-2) − (relu − gelu at the base's lr): across: {key: model.lr, a: 1.0e-2, b: ~}
    threads: 1                       # optional: torch threads per run (recorded in the run's config)
    devices_per_run: 1               # optional: accelerators per run (default 1 where any is visible)
    runs_per_device: 1               # optional: local jobs sharing each device (default 1; --runs-per-device)
    launcher: {partition: gpu, time: 120, gpus: 1}   # optional: SLURM settings (`slurm_settings`)

Each run logs into `<root>/<name>/<run>/` where `<run>` is e.g. `activation=relu,norm=none,seed=0`.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from actsweep.errors import ConfigError
from actsweep.io import read_yaml
from actsweep.resources import RUNS_PER_DEVICE
from actsweep.study.published import STUDIES
from actsweep.study.slurm_settings import SlurmSettings

KEYS = {"name": True, "base": True, "grid": True, "seeds": True, "fixed": False, "study": False, "labels": False,
        "threads": False, "devices_per_run": False, "runs_per_device": False, "comparisons": False, "launcher": False}
WHOLE_NUMBERS = {"threads": 1, "devices_per_run": 0, "runs_per_device": 1}  # keys that are counts: their least value
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class SweepError(ConfigError):
    """A sweep file that cannot be run; the message says what to change."""


def number_or_text(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as text; a learning rate should be a number."""
    if isinstance(value, str) and NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


def short(value: Any) -> str:
    """Short, filesystem-safe text of a value: 0.001 -> 1e-3, 0.5 -> 0.5, [relu, gelu] -> relu-gelu."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        mantissa, exponent = f"{value:.12e}".split("e")
        sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        plain = f"{value:.12f}".rstrip("0").rstrip(".")
        text = sci if len(sci) < len(plain) else plain
    elif isinstance(value, (list, tuple)):
        text = "-".join(short(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^\w.+-]", "_", text)


def cli_value(value: Any) -> str:
    """The text that LightningCLI parses back into `value`."""
    if isinstance(value, (list, dict, bool)) or value is None:
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Run:
    name: str
    overrides: dict[str, Any]  # the grid's values for this run, by dotted key
    seed: int
    label: str | None = None
    index: int = 0  # position in the sweep: the report's row order

    @property
    def config(self) -> str:
        """The run's name without its seed: the row it belongs to in the report."""
        return self.name.rsplit(",seed=", 1)[0]


@dataclass
class Sweep:
    name: str
    base: Path
    grid: list[dict[str, list[Any]]]
    seeds: list[int]
    fixed: dict[str, Any] = field(default_factory=dict)
    study: str | None = None
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: int = 1  # torch threads of every run: part of the run, so the same whatever --jobs
    devices_per_run: int | None = None  # accelerators per run; None: 1 where any is visible, else 0
    # Jobs sharing each device: placement only, so no part of a run's settings (results do not depend on it).
    runs_per_device: int = RUNS_PER_DEVICE
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # paired differences the report shows
    launcher: SlurmSettings = field(default_factory=SlurmSettings)
    forced: dict[str, Any] = field(default_factory=dict)  # applied after the grid's values (a smoke run's changes)
    part_seeds: list[list[int] | None] = field(default_factory=list)  # a grid part's own seeds, else None

    def seeds_of(self, index: int) -> list[int]:
        """The seeds of grid part `index`: its own where it names them, else the sweep's."""
        own = self.part_seeds[index] if index < len(self.part_seeds) else None
        return own if own is not None else self.seeds

    def runs(self) -> list[Run]:
        """Every grid point × seed, in file order; names are unique and depend only on the values."""
        keys = list(dict.fromkeys(k for part in self.grid for k in part))
        names = short_keys(keys)
        runs, seen = [], set()
        for index, part in enumerate(self.grid):
            for values in itertools.product(*part.values()):
                overrides = dict(zip(part, values))
                config = ",".join(f"{names[k]}={short(v)}" for k, v in overrides.items())
                for seed in self.seeds_of(index):
                    run = Run(f"{config},seed={seed}", overrides, seed, self.label_of(overrides), len(runs))
                    if run.name in seen:
                        raise SweepError(f"two runs are both named {run.name!r}: the grid repeats a point")
                    seen.add(run.name)
                    runs.append(run)
        return runs

    def label_of(self, overrides: dict[str, Any]) -> str | None:
        for label, match in self.labels.items():
            if all(k in overrides and overrides[k] == number_or_text(v) for k, v in match.items()):
                return label
        return None


def short_keys(keys: list[str]) -> dict[str, str]:
    """`model.lr` -> `lr`, unless two keys end alike; then both keep their dotted path."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


# What a comparison may say besides {key, a, b}, and the check of each value.
COMPARISON_OPTIONS = {
    "metric": ("a results.csv column", lambda v: isinstance(v, str)),
    "primary": ("true or false: one of the primary comparisons, adjusted together", lambda v: isinstance(v, bool)),
    "family": ("a name: the comparisons adjusted together", lambda v: isinstance(v, str) and v != ""),
    "equivalence": ("a positive number: the bound of its TOST", lambda v: isinstance(v, (int, float))
                    and not isinstance(v, bool) and v > 0),
    "across": ("{key: <grid key>, a: <value>, b: <value>}: an interaction",
               lambda v: isinstance(v, dict) and set(v) == {"key", "a", "b"}),
    "label": ("text shown instead of `a − b`", lambda v: isinstance(v, str)),
}


def load_comparisons(path: Path, spec: Any, grid: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """The sweep file's `comparisons`: each `{key, a, b}` and optionally `metric` (default val_loss),
    `primary`, `family`, `equivalence`, `across` (an interaction) and `label` (see `COMPARISON_OPTIONS`);
    each key a grid key and each value among its values (else the report would silently show nothing)."""
    if spec is None:
        return []
    if not isinstance(spec, list) or not all(isinstance(c, dict) and {"key", "a", "b"} <= set(c) for c in spec):
        raise SweepError(f"{path}: 'comparisons' is a list of {{key: <grid key>, a: <value>, b: <value>}}, got {spec!r}")
    for comparison in spec:
        for option, value in comparison.items():
            if option in ("key", "a", "b"):
                continue
            if option not in COMPARISON_OPTIONS:
                raise SweepError(f"{path}: comparison {comparison!r} has unknown key {option!r}; "
                                 f"allowed: key, a, b, {', '.join(COMPARISON_OPTIONS)}")
            what, check = COMPARISON_OPTIONS[option]
            if not check(value):
                raise SweepError(f"{path}: comparison {comparison!r}: {option!r} is {what}, got {value!r}")
    loaded = []
    for c in spec:
        comparison = {"metric": "val_loss", **c, "a": number_or_text(c["a"]), "b": number_or_text(c["b"])}
        if "across" in c:
            comparison["across"] = {**c["across"], "a": number_or_text(c["across"]["a"]),
                                    "b": number_or_text(c["across"]["b"])}
        loaded.append(comparison)
    values = grid_values(grid)
    for c in loaded:
        for pair in (c, c.get("across")):
            if pair is not None:
                check_in_grid(path, pair, values)
    return loaded


def check_in_grid(path: Path, pair: dict[str, Any], values: dict[str, list[Any]]) -> None:
    """Refuse a comparison (or its `across`) whose key is no grid key or whose a, b are not its values."""
    if pair["key"] not in values:
        raise SweepError(f"{path}: comparison key {pair['key']!r} is not a grid key; grid keys: {', '.join(values)}")
    missing = [v for v in (pair["a"], pair["b"]) if v not in values[pair["key"]]]
    if missing:
        raise SweepError(f"{path}: comparison of {pair['key']} names {missing[0]!r}, not among its grid values "
                         f"{values[pair['key']]}")


def grid_values(grid: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """Each grid key's values over every part of the grid, in file order; None (written `~`: the
    base config's value) where a part leaves the key out."""
    keys = dict.fromkeys(k for part in grid for k in part)
    values: dict[str, list[Any]] = {key: [] for key in keys}
    for part in grid:
        for key in keys:
            values[key] += [v for v in part.get(key, [None]) if v not in values[key]]
    return values


def default_comparisons(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """For each grid key (with its values in sweep order), every other value against the first
    (e.g. gelu − relu at each norm); per-layer activation lists are left to named comparisons."""
    comparisons = []
    for key, options in values.items():
        options = [v for v in dict.fromkeys(v for v in options if not isinstance(v, list))]
        comparisons += [{"key": key, "a": v, "b": options[0], "metric": "val_loss"} for v in options[1:]]
    return comparisons


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every problem is a `SweepError` naming the key at fault."""
    path = Path(path)
    spec = read_spec(path)
    grid, part_seeds = load_grid(path, spec["grid"])
    seed_list(spec["seeds"], f"{path}: 'seeds'")
    study = spec.get("study")
    if study is not None and study not in STUDIES:
        raise SweepError(f"{path}: unknown 'study' {study!r}; choose one of {', '.join(STUDIES)}")
    if not isinstance(spec["base"], str) or not Path(spec["base"]).is_file():
        raise SweepError(f"{path}: 'base' {spec['base']!r} is not a file (relative paths are from the working directory)")
    if not re.fullmatch(r"[\w.+-]+", str(spec["name"])):
        raise SweepError(f"{path}: 'name' {spec['name']!r} must be a plain folder name")
    fixed = {k: number_or_text(v) for k, v in mapping(path, spec, "fixed", "{dotted.key: value}").items()}
    labels = mapping(path, spec, "labels", "{label: {dotted.key: value}}")
    if not all(isinstance(match, dict) for match in labels.values()):
        raise SweepError(f"{path}: 'labels' maps each label to {{dotted.key: value}}, got {labels!r}")
    for key, least in WHOLE_NUMBERS.items():
        if key in spec:
            whole_number(spec[key], least, f"{path}: {key!r}")
    try:
        launcher = SlurmSettings.from_spec(spec.get("launcher"))
    except ConfigError as err:
        raise SweepError(f"{path}: {err}") from err
    sweep = Sweep(str(spec["name"]), Path(spec["base"]), grid, spec["seeds"], fixed, study, labels,
                  spec.get("threads", 1), spec.get("devices_per_run"), spec.get("runs_per_device", RUNS_PER_DEVICE),
                  load_comparisons(path, spec.get("comparisons"), grid), launcher, part_seeds=part_seeds)
    sweep.runs()  # name clashes are file errors too
    return sweep


def whole_number(value: Any, least: int, what: str) -> int:
    """`value` when it is an integer >= `least` (a count of threads, devices or jobs), else a `SweepError`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise SweepError(f"{what} is a whole number >= {least}, got {value!r}")
    return value


def read_spec(path: Path) -> dict[str, Any]:
    """The sweep file's mapping, with only known keys and every required one."""
    try:
        spec = read_yaml(path)
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"cannot read sweep file {path}: {' '.join(str(err).split())}") from err
    allowed = ", ".join(KEYS)
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {allowed}")
    for key in spec:
        if key not in KEYS:
            raise SweepError(f"{path}: unknown key {key!r}; allowed keys: {allowed}")
    for key, required in KEYS.items():
        if required and not spec.get(key):
            raise SweepError(f"{path}: {key!r} is missing or empty; allowed keys: {allowed}")
    return spec


def seed_list(value: Any, what: str) -> list[int]:
    """`value` when it is a non-empty list of integers, else a `SweepError`."""
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise SweepError(f"{what} is a non-empty list of integers, got {value!r}")
    return value


def load_grid(path: Path, spec: Any) -> tuple[list[dict[str, list[Any]]], list[list[int] | None]]:
    """`grid`: one mapping of dotted keys to non-empty lists of values, or a list of such mappings;
    with each part's own `seeds` (None where it names none)."""
    grid, part_seeds = [], []
    for part in spec if isinstance(spec, list) else [spec]:
        if isinstance(part, dict) and "seeds" in part:
            part = dict(part)
            part_seeds.append(seed_list(part.pop("seeds"), f"{path}: a grid part's 'seeds'"))
        else:
            part_seeds.append(None)
        if not isinstance(part, dict) or not part or not all(isinstance(v, list) and v for v in part.values()):
            raise SweepError(f"{path}: 'grid' maps dotted keys to non-empty lists of values, got {part!r}")
        grid.append({k: [number_or_text(v) for v in values] for k, values in part.items()})
    return grid, part_seeds


def mapping(path: Path, spec: dict[str, Any], key: str, shape: str) -> dict[str, Any]:
    """The optional mapping `spec[key]` ({} when absent), refused when it has another shape."""
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise SweepError(f"{path}: {key!r} is a mapping {shape}, got {value!r}")
    return value
