"""The adjusted table and the seed plan of `actsweep.study.review` as markdown: the claims section
of report.md and claims.md, and what `actsweep plan-seeds` prints."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from actsweep.study.claims import ALPHA, METHOD_NAMES, OUTLIER_P, POWER
from actsweep.study.intervals import Interval
from actsweep.study.markdown import table_lines


def _number(value: float, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def row_name(r: Any) -> str:
    """A row's comparison, or for a sensitivity row the seeds it leaves out ("… without seed 0")."""
    return r.comparison if r.kind == "comparison" else "… without " + ", ".join(
        part.split(":")[0] for part in r.without.split("; "))


def claim_cells(r: Any, other: str) -> list[object]:
    """One row of the adjusted table; `other`: the correction whose p stands beside the chosen one."""
    raw = Interval(r.mean, r.low, r.high, r.n).text(3, signed=True)
    adjusted = (Interval(r.mean, r.adj_low, r.adj_high, r.n).text(3, signed=True) +
                f" ({1 - r.level:.4g})") if math.isfinite(r.level) else ""
    name = row_name(r)
    equivalence = "" if not isinstance(r.equivalence, str) else r.equivalence if math.isnan(r.p_tost) else \
        f"{r.equivalence} (p {_number(r.p_tost, 2)}; ±{_number(r.equivalence_bound)})"
    return [name, r.at, r.metric, r.n, raw, adjusted, f"{_number(r.p, 2)} / {_number(r.p_signflip, 2)}",
            _number(r.p_adj, 2), _number(getattr(r, "p_" + other), 2), r.claim, _number(r.mde), equivalence]


def claims_markdown(table: pd.DataFrame, flagged: dict[str, str], alpha: float = ALPHA, power: float = POWER,
                    outlier_p: float = OUTLIER_P) -> list[str]:
    """The adjusted table, one section per family, then the outliers and the rules."""
    if table.empty:
        return []
    method = METHOD_NAMES[table.method.iloc[0]]
    other = "bh" if table.method.iloc[0] != "bh" else "holm"  # the other correction's p, for comparison
    lines = ["## Adjusted for multiple comparisons", ""]
    headers = ["comparison", "at", "metric", "n", "mean [95 % CI]", "adjusted CI (level)", "p (t / sign-flip)",
               f"p adjusted ({method})", "BH q" if other == "bh" else "Holm p", "claim", f"MDE ({power:.0%} power)",
               "equivalence (TOST)"]
    for family, rows in table.groupby("family", sort=False):
        m = int(rows.m.iloc[0])
        lines += [f"### Family `{family}`: {m} comparison{'s' * (m != 1)}", "",
                  *table_lines(headers, (claim_cells(r, other) for r in rows.itertuples())), ""]
    lines += [
        f"Each family's t-test p-values are adjusted by {method} (α = {alpha}); a direction is claimed only where "
        "the adjusted p < α, which is also where the interval at the row's adjusted level (in brackets: "
        "Holm's step-down level 1 − α/(m − rank + 1), Bonferroni's 1 − α/m, or BH's false-coverage level "
        "1 − Rα/m) excludes zero. The sign-flip p is exact (all 2^n sign patterns of the per-seed "
        "differences); with 5 seeds it cannot go below 2/32 = 0.0625. An unresolved row is not a null "
        f"result: its MDE is the smallest true difference it had a {power:.0%} chance to resolve at its "
        "level, and the TOST, run only against a bound the comparison declares (`equivalence` in the sweep "
        "file), shows equivalence within it only where both one-sided tests pass at the family's Bonferroni "
        "level α/m; otherwise the row is inconclusive.", ""]
    if flagged:
        lines += [f"Outlier runs (a val loss, act mean or grad norm outside the {1 - outlier_p:.1%} prediction "
                  "interval of its arm's other seeds: |x − mean| > t(k − 1) · SD · √(1 + 1/k) over the k other "
                  "seeds). Each row they feed is shown again without that seed (`… without`), its family adjusted "
                  "again with every flagged seed left out:", ""]
        lines += [f"- `{name}`: {why}" for name, why in flagged.items()] + [""]
    return lines


def plan_markdown(plan: pd.DataFrame, power: float = POWER) -> str:
    """The plan as a markdown table with the rule under it."""
    if plan.empty:
        return "No testable comparison of this metric to plan for."
    effect, metric = plan.effect.iloc[0], plan.metric.iloc[0]
    headers = ["comparison", "at", "family (m)", "level α/m", "n", "paired SD", f"power of n for {effect:g}",
               f"seeds for {power:.0%} power"]
    lines = table_lines(headers, ([row_name(r), r.at, f"{r.family} ({r.m})", _number(r.level), r.n, _number(r.sd),
                                   _number(r.power_now, 2), "" if math.isnan(r.seeds) else int(r.seeds)]
                                  for r in plan.itertuples()))
    lines += ["", f"Seeds a two-sided paired t-test needs to resolve a true {metric} difference of {effect:g} "
              f"with {power:.0%} power at the level α/m (the strictest a family of m adjusted rows applies), "
              "from the pilot's paired SD (statsmodels TTestPower), taken as the true one: a pilot of few "
              "seeds estimates it loosely, so the count is an estimate, not a guarantee. A `… without` row "
              "plans from the same pilot without its flagged outlier seeds."]
    return "\n".join(lines)
