"""The report's paired comparisons: for each comparison a sweep names (or the defaults), the
difference a − b of a final metric between runs that share a seed and every other grid value.

Runs with the same seed start from the same weights and see the same training windows, so their
difference removes the seed-to-seed spread that a comparison of two means would carry.

A comparison with `across: {key, a, b}` is an interaction, a difference of paired differences:
(a − b where `across.key` is `across.a`) − (a − b where it is `across.b`), still paired by seed, e.g.
"does ReLU − GELU change from lr 3e-3 to lr 1e-2?". A value `null` (YAML `~`) stands for "not set by
the grid": the base config's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from actsweep.study.claims import sign_flip_p, t_test_p
from actsweep.study.intervals import Interval, direction, paired_differences, t_interval
from actsweep.study.markdown import table_lines
from actsweep.study.outcomes import COMPLETED
from actsweep.study.published import same_value
from actsweep.study.sweep import short, short_keys

BASE = "base"  # how a `null` value (the base config's) is written in a row's text
HIDDEN = ("differences", "runs", "side_a", "side_b")  # per-seed columns a CSV leaves out (`per_seed` is their text)


@dataclass
class Pairing:
    """The paired differences of one setting, by seed, and the runs each difference came from."""

    differences: dict[int, float] = field(default_factory=dict)
    runs: dict[int, tuple[str, ...]] = field(default_factory=dict)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _matches(value: Any, wanted: Any) -> bool:
    if wanted is None:  # the grid did not set this key for the run: the base config's value
        return not isinstance(value, list) and _missing(value)
    if isinstance(value, list) or isinstance(wanted, list):  # per-layer activation lists
        return value == wanted
    return same_value(value, wanted)


def value_text(value: Any) -> str:
    return BASE if value is None else short(value)


def setting_text(row: pd.Series, keys: list[str], names: dict[str, str]) -> str:
    """`norm=none, lr=1e-3`: the run's values of `keys` (those it has: a grid may be a union)."""
    present = [k for k in keys if isinstance(row[k], list) or not pd.isna(row[k])]
    return ", ".join(f"{names[k]}={short(row[k])}" for k in present) or "all"


def _by_seed(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    return {int(seed): float(value) for seed, value in zip(rows["seed"], rows[metric])}


def _names_by_seed(rows: pd.DataFrame) -> dict[int, str]:
    names = rows["run"] if "run" in rows else rows.index.astype(str)
    return {int(seed): str(name) for seed, name in zip(rows["seed"], names)}


def setting_pairings(runs: pd.DataFrame, key: str, a: Any, b: Any, metric: str,
                     others: list[str], names: dict[str, str]) -> dict[str, Pairing]:
    """a − b of `metric` per setting of the `others` keys, over finished seeds. A setting where the
    grid has no `b` (e.g. a hybrid stack only run LayerNorm-free), or whose runs lack the metric,
    is left out; one whose runs have not finished is kept, with no differences."""
    if runs.empty:  # (pandas' string dtype maps an empty column to strings, which `&` refuses)
        return {}
    finished = runs.status.isin(COMPLETED)
    at = runs.apply(lambda r: setting_text(r, others, names), axis=1)
    is_a, is_b = runs[key].map(lambda v: _matches(v, a)), runs[key].map(lambda v: _matches(v, b))
    pairings = {}
    for setting in dict.fromkeys(at[is_a & finished]):
        here = at == setting
        if not (is_b & here).any() or runs.loc[(is_a | is_b) & here, metric].isna().all():
            continue  # no `b` in the grid, or a metric these runs do not have (saturation without DyT)
        side_a, side_b = runs[finished & is_a & here], runs[finished & is_b & here]
        differences = paired_differences(_by_seed(side_a, metric), _by_seed(side_b, metric))
        names_a, names_b = _names_by_seed(side_a), _names_by_seed(side_b)
        pairings[setting] = Pairing(differences, {s: (names_a[s], names_b[s]) for s in differences})
    return pairings


def interaction_pairings(runs: pd.DataFrame, comparison: dict[str, Any], others: list[str],
                         names: dict[str, str]) -> dict[str, Pairing]:
    """(a − b at across.a) − (a − b at across.b) per setting of the keys other than both keys."""
    across = comparison["across"]
    inner = [k for k in others if k != across["key"]]
    sides = []
    for value in (across["a"], across["b"]):
        subset = runs[runs[across["key"]].map(lambda v, value=value: _matches(v, value))]
        sides.append(setting_pairings(subset, comparison["key"], comparison["a"], comparison["b"],
                                      comparison["metric"], inner, names))
    pairings = {}
    for setting in (s for s in sides[0] if s in sides[1]):
        first, second = sides[0][setting], sides[1][setting]
        differences = paired_differences(first.differences, second.differences)
        pairings[setting] = Pairing(differences, {s: first.runs[s] + second.runs[s] for s in differences})
    return pairings


def comparison_text(comparison: dict[str, Any]) -> str:
    """`relu − gelu`, or for an interaction `(relu − gelu) at lr=0.01 − at lr=base`; a `label` wins."""
    if comparison.get("label"):
        return str(comparison["label"])
    text = f"{value_text(comparison['a'])} − {value_text(comparison['b'])}"
    across = comparison.get("across")
    if not across:
        return text
    name = across["key"].rsplit(".", 1)[-1]
    return f"({text}) at {name}={value_text(across['a'])} − at {name}={value_text(across['b'])}"


def difference_row(differences: dict[int, float], a: str, b: str) -> dict[str, Any]:
    """The numbers of one set of paired differences: n, mean, 95 % interval, SD, t and sign-flip p."""
    values = list(differences.values())
    interval = t_interval(values)
    sd = float(pd.Series(values).std(ddof=1)) if len(values) >= 2 else math.nan
    return {"n": interval.n, "mean": interval.mean, "low": interval.low, "high": interval.high,
            "per_seed": ", ".join(f"{s}: {d:+.3f}" for s, d in differences.items()),
            "direction": direction(interval, a, b), "sd": sd,
            "p": t_test_p(values), "p_signflip": sign_flip_p(values)}


def paired_table(runs: pd.DataFrame, comparisons: list[dict[str, Any]], grid_keys: list[str]) -> pd.DataFrame:
    """One row per comparison and setting of the other grid keys: n, mean a − b, its 95 % interval,
    the per-seed differences, the direction the interval allows, the paired SD and the t-test and
    sign-flip p. Only finished seeds count. `declared` is the comparison's place in `comparisons`
    (its family, unless it names one); `differences` and `runs` keep the per-seed values and the
    runs they came from, `side_a`/`side_b` the names a direction uses (left out of CSVs)."""
    names = short_keys(grid_keys)
    rows = []
    for index, comparison in enumerate(comparisons):
        key, a, b = comparison["key"], comparison["a"], comparison["b"]
        metric = comparison.get("metric", "val_loss")
        across = comparison.get("across")
        if key not in runs or metric not in runs or (across and across["key"] not in runs):
            continue
        others = [k for k in grid_keys if k != key and k in runs]
        if across:
            pairings = interaction_pairings(runs, {**comparison, "metric": metric}, others, names)
        else:
            pairings = setting_pairings(runs, key, a, b, metric, others, names)
        # an interaction's "a lower" reads as "the difference is lower at across.a"
        low_name, high_name = ((f"at {value_text(across['a'])}", f"at {value_text(across['b'])}") if across
                               else (value_text(a), value_text(b)))
        for setting, pairing in pairings.items():
            rows.append({"comparison": comparison_text(comparison), "key": key, "metric": metric, "at": setting,
                         **difference_row(pairing.differences, low_name, high_name), "declared": index,
                         "differences": pairing.differences, "runs": pairing.runs,
                         "side_a": low_name, "side_b": high_name})
    return pd.DataFrame(rows)


def paired_markdown(table: pd.DataFrame) -> str:
    """The paired table as markdown, with the rule for reading it."""
    if table.empty:
        return ""
    rows = ([r.comparison, r.at, r.metric, r.n, Interval(r.mean, r.low, r.high, r.n).text(3, signed=True),
             r.per_seed, r.direction] for r in table.itertuples())
    lines = table_lines(["comparison", "at", "metric", "n", "mean difference [95 % CI]", "per seed",
                         "direction (unadjusted)"], rows)
    lines += ["", "Differences are paired by seed (same initial weights and training windows) over seeds that "
              "finished on both sides; the interval is a two-sided 95 % Student-t interval of the mean "
              "difference, not adjusted for the number of comparisons. The direction column reads that "
              "unadjusted interval (a side where it excludes zero) and is no claim: claims are made only in "
              "the adjusted table, within each family."]
    return "\n".join(lines)
