"""The adjusted table: each paired comparison judged within its family, with what an unresolved row
can and cannot say, and each row that a flagged outlier run feeds shown again without it.

- **Families.** A comparison the sweep file marks `primary: true` belongs to the family `primary`
  (all primary comparisons together); one with `family: NAME` to that family; any other is a family
  of its own (its rows: one per setting). Within a family the t-test p-values are adjusted (Holm by
  default, `bh` for Benjamini–Hochberg, `bonferroni`), and a direction is claimed only where the
  adjusted p < α, which is also where the interval at the row's adjusted level excludes zero.
- **Unresolved rows** carry their minimum detectable effect (80 % power, paired t at the row's
  adjusted level, the observed paired SD) and a paired TOST against the comparison's declared
  `equivalence` bound, else against the MDE: "equivalent within ±δ" where shown, else "inconclusive".
- **Outliers.** A finished run whose val loss, act mean or grad norm lies outside the 99.9 %
  prediction interval of its arm's other seeds (the arm: the same configuration; `claims.outliers`
  says why this rule and not a MAD one) is flagged; every row it feeds gets a sensitivity row
  without that seed, at the same level.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from actsweep.study.claims import (
    ALPHA, OUTLIER_P, POWER, adjust, adjusted_levels, minimum_detectable_effect, outliers, testable, tost_p,
)
from actsweep.study.intervals import Interval, direction, t_interval
from actsweep.study.paired import FINISHED, HIDDEN, comparison_text, difference_row, setting_text
from actsweep.study.sweep import short_keys

OUTLIER_STATISTICS = ("val_loss", "act_mean", "grad_norm")
METHOD_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "bonferroni": "Bonferroni"}


def family_of(comparison: dict[str, Any], index: int) -> str:
    if comparison.get("family"):
        return str(comparison["family"])
    if comparison.get("primary"):
        return "primary"
    return f"#{index + 1}: {comparison_text(comparison)} ({comparison.get('metric', 'val_loss')})"


def outlier_runs(runs: pd.DataFrame, grid_keys: list[str], outlier_p: float = OUTLIER_P) -> dict[str, str]:
    """Flagged finished runs, by run name, with why: `val_loss 2.568 (other seeds 2.221, 2.256, …)`."""
    finished = runs[runs.status.isin(FINISHED)]
    if "config" in finished:
        arms = finished["config"]
    else:
        names = short_keys(grid_keys)
        arms = finished.apply(lambda r: setting_text(r, [k for k in grid_keys if k in r], names), axis=1)
    names_of = finished["run"] if "run" in finished else finished.index.astype(str)
    reasons: dict[str, list[str]] = {}
    for _, arm in finished.groupby(arms, sort=False):
        for statistic in (s for s in OUTLIER_STATISTICS if s in arm):
            values = dict(zip(names_of[arm.index], arm[statistic].astype(float)))
            for name in outliers(values, outlier_p):
                others = ", ".join(f"{v:.3f}" for k, v in values.items() if k != name)
                reasons.setdefault(name, []).append(f"{statistic} {values[name]:.3f} (other seeds {others})")
    return {name: "; ".join(why) for name, why in reasons.items()}


def _judged(row: dict[str, Any], differences: dict[int, float], level: float, a: str, b: str) -> dict[str, Any]:
    """The interval of `differences` at the adjusted level and the direction it allows."""
    adjusted = t_interval(list(differences.values()), 1 - level) if math.isfinite(level) else Interval(
        math.nan, math.nan, math.nan, 0)
    return {**row, "level": level, "adj_low": adjusted.low, "adj_high": adjusted.high,
            "adj_direction": direction(adjusted, a, b) if math.isfinite(level) else "unresolved"}


def _null_reading(row: dict[str, Any], differences: dict[int, float], bound: float | None,
                  power: float) -> dict[str, Any]:
    """MDE and TOST of an unresolved row, at its adjusted level."""
    mde = minimum_detectable_effect(row["n"], row["sd"], row["level"], power)
    delta, source = (float(bound), "declared") if bound else (mde, "MDE")
    p = tost_p(list(differences.values()), delta)
    verdict = "" if math.isnan(p) else (f"equivalent within ±{delta:.3g}" if p < row["level"] else "inconclusive")
    return {"mde": mde, "equivalence_bound": delta, "bound_from": source, "p_tost": p, "equivalence": verdict}


def claims_table(paired: pd.DataFrame, comparisons: list[dict[str, Any]], runs: pd.DataFrame,
                 grid_keys: list[str], method: str = "holm", alpha: float = ALPHA, power: float = POWER,
                 outlier_p: float = OUTLIER_P) -> pd.DataFrame:
    """The paired table judged per family (see the module's rules), one row per comparison and
    setting, each followed by its sensitivity row where a flagged run feeds it."""
    if paired.empty:
        return pd.DataFrame()
    table = paired.copy()
    table["family"] = [family_of(comparisons[i], i) for i in table.declared]
    table["primary"] = [bool(comparisons[i].get("primary")) for i in table.declared]
    table["p_adj"], table["level"], table["m"] = math.nan, math.nan, 0
    for _, rows in table.groupby("family", sort=False):
        table.loc[rows.index, "p_adj"] = adjust(rows.p, method)
        table.loc[rows.index, "level"] = adjusted_levels(rows.p, method, alpha)
        table.loc[rows.index, "m"] = int(rows.p.notna().sum())
    flagged = outlier_runs(runs, grid_keys, outlier_p)
    out = []
    for _, row in table.iterrows():
        a, b = row["side_a"], row["side_b"]
        differences, bound = row["differences"], comparisons[row["declared"]].get("equivalence")
        judged = _judged({**row.drop(list(HIDDEN)).to_dict(), "method": method, "kind": "comparison",
                          "without": ""}, differences, row["level"], a, b)
        survives = math.isfinite(judged["p_adj"]) and judged["p_adj"] < alpha
        # Holm: a row whose interval clears zero may still not be rejected (a smaller p was not)
        judged["claim"] = judged["adj_direction"] if survives else (
            "unresolved" if testable(list(differences.values())) else "untestable")
        if judged["claim"] == "unresolved":
            judged.update(_null_reading(judged, differences, bound, power))
        out.append(judged)
        dropped = {seed: sorted(set(names) & set(flagged)) for seed, names in row["runs"].items()}
        dropped = {seed: names for seed, names in dropped.items() if names}
        if dropped:
            kept = {s: d for s, d in differences.items() if s not in dropped}
            sensitivity = _judged({**judged, **difference_row(kept, a, b), "kind": "without outliers",
                                   "without": "; ".join(f"seed {s}: {', '.join(n)}" for s, n in dropped.items()),
                                   "p_adj": math.nan}, kept, row["level"], a, b)
            sensitivity["claim"] = f"{sensitivity['adj_direction']} (at the row's level)"
            if sensitivity["adj_direction"] == "unresolved" and testable(list(kept.values())):
                sensitivity.update(_null_reading(sensitivity, kept, bound, power))
            out.append(sensitivity)
    columns = ["family", "primary", "method", "m", "kind", "without", "comparison", "key", "metric", "at", "n",
               "mean", "sd", "low", "high", "p", "p_signflip", "p_adj", "level", "adj_low", "adj_high", "direction",
               "claim", "mde", "equivalence_bound", "bound_from", "p_tost", "equivalence", "per_seed"]
    return pd.DataFrame(out).reindex(columns=columns)


def _number(value: float, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def claims_markdown(table: pd.DataFrame, flagged: dict[str, str], alpha: float = ALPHA, power: float = POWER,
                    outlier_p: float = OUTLIER_P) -> list[str]:
    """The adjusted table, one section per family, then the outliers and the rules."""
    if table.empty:
        return []
    method = METHOD_NAMES[table.method.iloc[0]]
    lines = ["## Adjusted for multiple comparisons", ""]
    header = ("| comparison | at | metric | n | mean [95 % CI] | adjusted CI (level) | p (t / sign-flip) | "
              f"p adjusted ({method}) | claim | MDE ({power:.0%} power) | equivalence (TOST) |")
    for family, rows in table.groupby("family", sort=False):
        m = int(rows.m.iloc[0])
        lines += [f"### Family `{family}`: {m} comparison{'s' * (m != 1)}", "", header, "|" + "---|" * 11]
        for r in rows.itertuples():
            raw = Interval(r.mean, r.low, r.high, r.n).text(3, signed=True)
            adjusted = (Interval(r.mean, r.adj_low, r.adj_high, r.n).text(3, signed=True) +
                        f" ({1 - r.level:.4g})") if math.isfinite(r.level) else ""
            name = r.comparison if r.kind == "comparison" else "… without " + ", ".join(
                part.split(":")[0] for part in r.without.split("; "))
            equivalence = f"{r.equivalence} (p {_number(r.p_tost, 2)}; ±{_number(r.equivalence_bound)} {r.bound_from})" \
                if isinstance(r.equivalence, str) and r.equivalence else ""
            lines.append(f"| {name} | {r.at} | {r.metric} | {r.n} | {raw} | {adjusted} | {_number(r.p, 2)} / "
                         f"{_number(r.p_signflip, 2)} | {_number(r.p_adj, 2)} | {r.claim} | {_number(r.mde)} | "
                         f"{equivalence} |")
        lines.append("")
    lines += [
        f"Each family's t-test p-values are adjusted by {method} (α = {alpha}); a direction is claimed only where "
        "the adjusted p < α, which is also where the interval at the row's adjusted level (in brackets: "
        "Holm's step-down level 1 − α/(m − rank + 1), Bonferroni's 1 − α/m, or BH's false-coverage level "
        "1 − Rα/m) excludes zero. The sign-flip p is exact (all 2^n sign patterns of the per-seed "
        "differences); with 5 seeds it cannot go below 2/32 = 0.0625. An unresolved row is not a null "
        f"result: its MDE is the smallest true difference it had a {power:.0%} chance to resolve at its "
        "level, and the TOST shows equivalence within the declared bound (else within the MDE) only where "
        "both one-sided tests pass at that level; otherwise the row is inconclusive.", ""]
    if flagged:
        lines += [f"Outlier runs (a val loss, act mean or grad norm outside the {1 - outlier_p:.1%} prediction "
                  "interval of its arm's other seeds: |x − mean| > t(k − 1) · SD · √(1 + 1/k) over the k other "
                  "seeds); each row they feed is shown again without that seed, at the row's adjusted level:", ""]
        lines += [f"- `{name}`: {why}" for name, why in flagged.items()] + [""]
    return lines
