"""The report's paired comparisons: for each comparison a sweep names (or the defaults), the
difference a − b of a final metric between runs that share a seed and every other grid value.

Runs with the same seed start from the same weights and see the same training windows, so their
difference removes the seed-to-seed spread that a comparison of two means would carry.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from actsweep.study.intervals import Interval, direction, paired_differences, t_interval
from actsweep.study.published import same_value
from actsweep.study.sweep import short, short_keys

FINISHED = ("Stable", "Unstable")


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(value, list) or isinstance(wanted, list):  # per-layer activation lists
        return value == wanted
    return same_value(value, wanted)


def setting_text(row: pd.Series, keys: list[str], names: dict[str, str]) -> str:
    """`norm=none, lr=1e-3`: the run's values of `keys` (those it has: a grid may be a union)."""
    present = [k for k in keys if isinstance(row[k], list) or not pd.isna(row[k])]
    return ", ".join(f"{names[k]}={short(row[k])}" for k in present) or "all"


def _by_seed(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    return {int(seed): float(value) for seed, value in zip(rows["seed"], rows[metric])}


def paired_table(runs: pd.DataFrame, comparisons: list[dict[str, Any]], grid_keys: list[str]) -> pd.DataFrame:
    """One row per comparison and setting of the other grid keys: n, mean a − b, its 95 % interval,
    the per-seed differences and the direction the interval allows. Only finished seeds count; a
    setting where the grid has no `b` (e.g. a hybrid stack only run LayerNorm-free), or whose runs
    lack the metric, has no row."""
    names = short_keys(grid_keys)
    finished = runs.status.isin(FINISHED)
    rows = []
    for comparison in comparisons:
        key, a, b, metric = comparison["key"], comparison["a"], comparison["b"], comparison.get("metric", "val_loss")
        if key not in runs or metric not in runs:
            continue
        others = [k for k in grid_keys if k != key and k in runs]
        at = runs.apply(lambda r: setting_text(r, others, names), axis=1) if len(runs) else runs.seed
        is_a, is_b = runs[key].map(lambda v: _matches(v, a)), runs[key].map(lambda v: _matches(v, b))
        for setting in dict.fromkeys(at[is_a & finished]):
            here = at == setting
            if not (is_b & here).any() or runs.loc[(is_a | is_b) & here, metric].isna().all():
                continue  # no `b` in the grid, or a metric these runs do not have (saturation without DyT)
            diffs = paired_differences(_by_seed(runs[finished & is_a & here], metric),
                                       _by_seed(runs[finished & is_b & here], metric))
            interval = t_interval(list(diffs.values()))
            rows.append({
                "comparison": f"{short(a)} − {short(b)}", "key": key, "metric": metric, "at": setting,
                "n": interval.n, "mean": interval.mean, "low": interval.low, "high": interval.high,
                "per_seed": ", ".join(f"{s}: {d:+.3f}" for s, d in diffs.items()),
                "direction": direction(interval, short(a), short(b)),
            })
    return pd.DataFrame(rows)


def paired_markdown(table: pd.DataFrame) -> str:
    """The paired table as markdown, with the rule for reading it."""
    if table.empty:
        return ""
    lines = ["| comparison | at | metric | n | mean difference [95 % CI] | per seed | claim |", "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        text = Interval(r.mean, r.low, r.high, r.n).text(3, signed=True)
        lines.append(f"| {r.comparison} | {r.at} | {r.metric} | {r.n} | {text} | {r.per_seed} | {r.direction} |")
    lines += ["", "Differences are paired by seed (same initial weights and training windows) over seeds that "
              "finished on both sides; the interval is a two-sided 95 % Student-t interval of the mean "
              "difference. A direction is claimed only where the interval excludes zero."]
    return "\n".join(lines)
