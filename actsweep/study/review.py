"""The adjusted table: each paired comparison judged within its family, with what an unresolved row
can and cannot say, and each row that a flagged outlier run feeds shown again without it.

- **Families.** A comparison the sweep file marks `primary: true` belongs to the family `primary`
  (all primary comparisons together); one with `family: NAME` to that family; any other is a family
  of its own (its rows: one per setting). Within a family the t-test p-values are adjusted (Holm by
  default, `bh` for Benjamini–Hochberg, `bonferroni`), and a direction is claimed only where the
  adjusted p < α, which is also where the interval at the row's adjusted level excludes zero.
- **Unresolved rows** carry their minimum detectable effect (80 % power, paired t at the row's
  adjusted level, the observed paired SD) and, where the comparison declares an `equivalence` bound,
  a paired TOST against it at the family's Bonferroni level α/m: "equivalent within ±δ" where
  shown, else "inconclusive". Without a declared bound there is no TOST ("no bound declared"): a
  bound taken from the row's own MDE (the same SD) would pass nearly any unresolved row.
- **Outliers.** A finished run whose val loss, act mean or grad norm lies outside the 99.9 %
  prediction interval of its arm's other seeds (the arm: the same configuration; `claims.outliers`
  says why this rule and not a MAD one) is flagged; every row it feeds gets a sensitivity row
  without that seed, adjusted within its family as if every flagged seed had been left out.
- **Seed plan.** From a (pilot) table's paired SDs, the seeds each primary comparison needs to
  resolve a given effect (`seed_plan`, `actsweep plan-seeds`; the rule in `actsweep.study.seeds`).

The numbers only: `review_text` shows them as markdown.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from actsweep.study.claims import (
    ALPHA, OUTLIER_P, POWER, adjust, adjusted_levels, minimum_detectable_effect, outliers,
    paired_power, seeds_for_power, testable, tost_p,
)
from actsweep.study.intervals import direction, t_interval
from actsweep.study.outcomes import COMPLETED
from actsweep.study.paired import comparison_text, difference_row

OUTLIER_STATISTICS = ("val_loss", "act_mean", "grad_norm")


def family_of(comparison: dict[str, Any], index: int) -> str:
    if comparison.get("family"):
        return str(comparison["family"])
    if comparison.get("primary"):
        return "primary"
    return f"#{index + 1}: {comparison_text(comparison)} ({comparison.get('metric', 'val_loss')})"


def outlier_runs(runs: pd.DataFrame, outlier_p: float = OUTLIER_P) -> dict[str, str]:
    """Flagged finished runs, by run name, with why: `val_loss 2.568 (other seeds 2.221, 2.256, …)`.
    A run's arm is its `config` (the settings but the seed)."""
    finished = runs[runs.status.isin(COMPLETED)]
    reasons: dict[str, list[str]] = {}
    for _, arm in finished.groupby("config", sort=False):
        for statistic in (s for s in OUTLIER_STATISTICS if s in arm):
            values = dict(zip(arm["run"], arm[statistic].astype(float)))
            for name in outliers(values, outlier_p):
                others = ", ".join(f"{v:.3f}" for k, v in values.items() if k != name)
                reasons.setdefault(name, []).append(f"{statistic} {values[name]:.3f} (other seeds {others})")
    return {name: "; ".join(why) for name, why in reasons.items()}


NO_BOUND = "no bound declared"


def _judged(row: dict[str, Any], differences: dict[int, float], alpha: float, power: float,
            bound: float | None) -> dict[str, Any]:
    """A row with its interval at its adjusted `level`, its claim (a direction only where the
    adjusted p < α) and, when unresolved, its MDE at that level and its TOST at α/m."""
    values, level = list(differences.values()), row["level"]
    adjusted = t_interval(values, 1 - level)  # an untestable row's NaN level gives a NaN interval
    survives = math.isfinite(row["p_adj"]) and row["p_adj"] < alpha
    # Holm: a row whose interval clears zero may still not be rejected (a smaller p was not)
    claim = direction(adjusted, row["side_a"], row["side_b"]) if survives else (
        "unresolved" if testable(values) else "untestable")
    judged = {**row, "adj_low": adjusted.low, "adj_high": adjusted.high, "claim": claim}
    if claim == "unresolved":
        judged["mde"] = minimum_detectable_effect(row["n"], row["sd"], level, power)
        # No bound of the row's own (its MDE, from the same SD): that TOST passes whenever |t| is small
        judged["equivalence"] = NO_BOUND
        if bound:
            # at the family's Bonferroni level α/m: the leniency Holm's step-down gives a row of large
            # difference p (its level up to α) would favour equivalence exactly where a row is weakest
            p = tost_p(values, float(bound))
            verdict = f"equivalent within ±{bound:.3g}" if p < alpha / row["m"] else "inconclusive"  # p finite: testable
            judged.update({"equivalence_bound": float(bound), "p_tost": p, "equivalence": verdict})
    return judged


def _dropped(pairing_runs: dict[int, tuple[str, ...]], flagged: dict[str, str]) -> dict[int, list[str]]:
    """The seeds of a row whose difference used a flagged run, with those runs."""
    dropped = {seed: sorted(set(names) & set(flagged)) for seed, names in pairing_runs.items()}
    return {seed: names for seed, names in dropped.items() if names}


def claims_table(paired: pd.DataFrame, comparisons: list[dict[str, Any]], flagged: dict[str, str],
                 method: str = "holm", alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """The paired table judged per family (see the module's rules), one row per comparison and
    setting, each followed by its sensitivity row where a `flagged` run (`outlier_runs`) feeds it.
    The sensitivity rows are the same analysis with every flagged seed left out: each family is
    adjusted again with their p-values in place of their rows' (the other rows unchanged)."""
    if paired.empty:
        return pd.DataFrame()
    base = paired.drop(columns=["differences", "runs"]).to_dict("records")
    rows, sensitivity = [], []
    for record, differences, pairing_runs in zip(base, paired.differences, paired.runs):
        comparison = comparisons[record["declared"]]
        record.update({"family": family_of(comparison, record["declared"]), "primary": bool(comparison.get("primary")),
                       "method": method, "kind": "comparison", "without": ""})
        rows.append((record, differences))
        dropped = _dropped(pairing_runs, flagged)
        kept = {s: d for s, d in differences.items() if s not in dropped}
        without = "; ".join(f"seed {s}: {', '.join(names)}" for s, names in dropped.items())
        sensitivity.append(({**record, **difference_row(kept, record["side_a"], record["side_b"]),
                             "kind": "without outliers", "without": without}, kept) if dropped else None)
    families: dict[str, list[int]] = {}
    for i, (record, _) in enumerate(rows):
        families.setdefault(record["family"], []).append(i)
    for members in families.values():
        p = [rows[i][0]["p"] for i in members]
        p_without = [sensitivity[i][0]["p"] if sensitivity[i] else rows[i][0]["p"] for i in members]
        m = sum(math.isfinite(v) for v in p)
        for values, targets in ((p, [rows[i][0] for i in members]),
                                (p_without, [sensitivity[i][0] if sensitivity[i] else {} for i in members])):
            # the chosen method decides the claim; Holm's and BH's p stand beside it either way
            for target, p_adj, level, p_holm, p_bh in zip(targets, adjust(values, method),
                                                          adjusted_levels(values, method, alpha),
                                                          adjust(values, "holm"), adjust(values, "bh")):
                target.update({"m": m, "p_adj": p_adj, "level": level, "p_holm": p_holm, "p_bh": p_bh})
    out = []
    for i, (record, differences) in enumerate(rows):
        bound = comparisons[record["declared"]].get("equivalence")
        out.append(_judged(record, differences, alpha, power, bound))
        if sensitivity[i]:
            out.append(_judged(*sensitivity[i], alpha, power, bound))
    columns = ["family", "primary", "method", "m", "kind", "without", "comparison", "key", "metric", "at", "n",
               "mean", "sd", "low", "high", "p", "p_signflip", "p_adj", "p_holm", "p_bh", "level", "adj_low", "adj_high", "direction",
               "claim", "mde", "equivalence_bound", "p_tost", "equivalence", "per_seed"]
    return pd.DataFrame(out).reindex(columns=columns)


# -- the seed plan (`actsweep plan-seeds`) ------------------------------------------------------


def planned_rows(claims: pd.DataFrame, metric: str, primary_only: bool = True) -> pd.DataFrame:
    """The comparison rows of `metric`, each followed by its row without flagged seeds where it has
    one (a plan, like a claim, is shown with and without them); primary ones where any is primary."""
    rows = claims[claims.kind.isin(["comparison", "without outliers"]) & (claims.metric == metric)] \
        if len(claims) else claims
    if primary_only and len(rows) and rows.primary.astype(bool).any():
        rows = rows[rows.primary.astype(bool)]
    return rows


def seed_plan(claims: pd.DataFrame, effect: float, metric: str = "val_loss", alpha: float = ALPHA,
              power: float = POWER, primary_only: bool = True) -> pd.DataFrame:
    """One row per planned comparison: its family, m, the planning level α/m, its n and paired SD,
    the power n seeds had for `effect` and the seeds needed for `power`."""
    rows = planned_rows(claims, metric, primary_only)
    plan = []
    for r in rows.itertuples():
        level = alpha / r.m if r.m >= 1 else math.nan
        plan.append({"family": r.family, "comparison": r.comparison, "kind": r.kind, "without": r.without,
                     "at": r.at, "metric": r.metric,
                     "m": int(r.m), "level": level, "n": int(r.n), "sd": r.sd, "effect": effect,
                     "power_now": paired_power(effect, r.sd, int(r.n), level),
                     "seeds": seeds_for_power(effect, r.sd, level, power)})
    return pd.DataFrame(plan, columns=["family", "comparison", "kind", "without", "at", "metric", "m", "level", "n",
                                       "sd", "effect", "power_now", "seeds"])
