"""A finished sweep as one object for a notebook: its runs, paired and adjusted tables, outliers,
seed plan, logged curves and figures, from the same functions the report uses.

    study = actsweep.load_study("lightning_logs/sweeps/cpu_study")          # a sweep's folder
    study = actsweep.load_study("docs/results/cpu_study/results.csv",      # or a committed CSV
                                sweep="configs/sweeps/cpu_study.yaml")
    study.runs, study.paired, study.claims, study.outliers, study.plan_seeds(0.085)
    study.curves("train/loss"), study.figures("out/")

A study read from a CSV has no run folders, so no curves and no figures but the forest plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from actsweep.study.claims import ALPHA, POWER
from actsweep.study.figures import FIGURES, by_config, plot_forest
from actsweep.study.logs import RunLog, read_runs
from actsweep.study.paired import HIDDEN, paired_table
from actsweep.study.report import comparisons_of, csv_inputs, grid_keys_of, runs_table
from actsweep.study.review import claims_table, outlier_runs, seed_plan
from actsweep.study.sweep import SweepError, load_sweep


@dataclass
class Study:
    """A sweep's runs (one row each, as `results.csv`), its comparisons and grid keys, and its run
    logs (empty when read from a CSV); the tables are computed on first use."""

    runs: pd.DataFrame
    comparisons: list[dict[str, Any]]
    grid_keys: list[str]
    logs: list[RunLog] = field(default_factory=list)
    method: str = "holm"
    alpha: float = ALPHA

    @cached_property
    def _paired(self) -> pd.DataFrame:
        return paired_table(self.runs, self.comparisons, self.grid_keys)

    @property
    def paired(self) -> pd.DataFrame:
        """The raw paired differences, as `paired.csv`."""
        return self._paired.drop(columns=[c for c in (*HIDDEN, "declared") if c in self._paired])

    @cached_property
    def claims(self) -> pd.DataFrame:
        """The adjusted table, as `claims.csv`."""
        if self._paired.empty:
            return pd.DataFrame()
        return claims_table(self._paired, self.comparisons, self.outliers, self.method, self.alpha)

    @cached_property
    def outliers(self) -> dict[str, str]:
        """Flagged runs and why (`review.outlier_runs`)."""
        return outlier_runs(self.runs)

    def plan_seeds(self, effect: float, metric: str = "val_loss", power: float = POWER,
                   primary_only: bool = True) -> pd.DataFrame:
        """Seeds per primary comparison for `power` to resolve `effect` (`review.seed_plan`)."""
        return seed_plan(self.claims, effect, metric, self.alpha, power, primary_only)

    def curves(self, tag: str) -> pd.DataFrame:
        """Every run's logged `tag` in long form: run, config, label, seed, step, value."""
        frames = [pd.DataFrame({"run": log.info["name"], "config": log.info["config"], "label": log.info.get("label"),
                                "seed": log.info["seed"], "step": log.scalars[tag].index, "value": log.scalars[tag].values})
                  for log in self.logs if tag in log.scalars]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["run", "config", "label", "seed", "step", "value"])

    def figures(self, out_dir: str | Path) -> dict[str, Path]:
        """Draw the report's figures and the forest plot into `out_dir`; title -> path of those drawn."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        drawn = {}
        groups = by_config(self.logs)
        for name, (title, plot) in FIGURES.items():
            if self.logs and plot(groups, out_dir / name):
                drawn[title] = out_dir / name
        if not self.claims.empty and plot_forest(self.claims, out_dir / "forest.png"):
            drawn["Primary comparisons"] = out_dir / "forest.png"
        return drawn


def load_study(source: str | Path, sweep: str | Path | None = None, method: str = "holm", alpha: float = ALPHA) -> Study:
    """A sweep's folder (its run logs; the comparisons of `sweep` when given, else those the runs
    recorded) or a results.csv (then `sweep` is needed: its grid and comparisons)."""
    source = Path(source)
    loaded = load_sweep(sweep) if sweep else None
    if source.is_file():
        if loaded is None:
            raise SweepError(f"{source} is a results.csv: give its sweep file too (sweep=..., --sweep)")
        runs, comparisons, grid_keys = csv_inputs(source, loaded)
        return Study(runs, comparisons, grid_keys, [], method, alpha)
    logs = read_runs(source)
    if not logs:
        raise FileNotFoundError(f"{source} has no run folders (event files or status.json)")
    grid_keys = grid_keys_of(logs)
    comparisons = (loaded.comparisons if loaded else None) or comparisons_of(logs, grid_keys)
    return Study(runs_table(logs), comparisons, grid_keys, logs, method, alpha)
