"""`actsweep plan-seeds SOURCE --effect δ`: how many seeds each primary comparison of a finished
(pilot) sweep needs to resolve a true difference δ with 80 % power, from its observed paired SD.

SOURCE is a sweep's folder or a committed results.csv (with `--sweep SWEEP`). For each comparison
row of the primary family (every row where the sweep names none) of one metric (default val_loss),
the plan gives the power its n seeds had for δ and the seeds a paired t-test needs, at the level
α/m, m the family's size: the strictest level a family of m adjusted rows puts a row to (Holm's
first step, Bonferroni's every step; Benjamini–Hochberg's when it rejects one row), because which
rank a future row will have is not known when the seeds are chosen.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from actsweep.study.claims import ALPHA, METHODS, POWER, paired_power, seeds_for_power
from actsweep.study.sweep import SweepError


def planned_rows(claims: pd.DataFrame, metric: str, primary_only: bool = True) -> pd.DataFrame:
    """The comparison rows (no sensitivity rows) of `metric`, primary ones where any is primary."""
    rows = claims[(claims.kind == "comparison") & (claims.metric == metric)] if len(claims) else claims
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
        plan.append({"family": r.family, "comparison": r.comparison, "at": r.at, "metric": r.metric,
                     "m": int(r.m), "level": level, "n": int(r.n), "sd": r.sd, "effect": effect,
                     "power_now": paired_power(effect, r.sd, int(r.n), level),
                     "seeds": seeds_for_power(effect, r.sd, level, power)})
    return pd.DataFrame(plan, columns=["family", "comparison", "at", "metric", "m", "level", "n", "sd", "effect",
                                       "power_now", "seeds"])


def _cell(value: float, digits: int = 3) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}g}"


def plan_markdown(plan: pd.DataFrame, power: float = POWER) -> str:
    """The plan as a markdown table with the rule under it."""
    if plan.empty:
        return "No testable comparison of this metric to plan for."
    effect, metric = plan.effect.iloc[0], plan.metric.iloc[0]
    lines = [f"| comparison | at | family (m) | level α/m | n | paired SD | power of n for {effect:g} | "
             f"seeds for {power:.0%} power |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.comparison} | {r.at} | {r.family} ({r.m}) | {_cell(r.level)} | {r.n} | {_cell(r.sd)} | "
              f"{_cell(r.power_now, 2)} | {'' if math.isnan(r.seeds) else int(r.seeds)} |" for r in plan.itertuples()]
    lines += ["", f"Seeds a two-sided paired t-test needs to resolve a true {metric} difference of {effect:g} "
              f"with {power:.0%} power at the level α/m (the strictest a family of m adjusted rows applies), "
              "from the pilot's paired SD (statsmodels TTestPower), taken as the true one: a pilot of few "
              "seeds estimates it loosely, so the count is an estimate, not a guarantee."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actsweep plan-seeds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a finished sweep's folder, or its results.csv (with --sweep)")
    parser.add_argument("--effect", type=float, required=True, metavar="DELTA",
                        help="the true difference to resolve, in the metric's units (e.g. 0.085 nats)")
    parser.add_argument("--sweep", type=Path, metavar="SWEEP", help="the sweep file (needed for a results.csv)")
    parser.add_argument("--metric", default="val_loss", help="the compared column (default val_loss)")
    parser.add_argument("--power", type=float, default=POWER, help=f"target power (default {POWER})")
    parser.add_argument("--all", action="store_true", help="every comparison, not only the primary ones")
    parser.add_argument("--adjust", choices=list(METHODS), default="holm", help="the report's correction (default holm)")
    args = parser.parse_args(argv)
    if not (args.effect > 0 and 0 < args.power < 1):
        parser.error("--effect must be > 0 and --power between 0 and 1")
    from actsweep.study.results import load_study  # the report's loaders (and their plotting imports) only here

    try:
        study = load_study(args.source, args.sweep, args.adjust)
    except (SweepError, FileNotFoundError, NotADirectoryError) as err:
        print(f"actsweep plan-seeds: error: {err}", file=sys.stderr)
        return 2
    print(plan_markdown(study.plan_seeds(args.effect, args.metric, args.power, not args.all), args.power))
    return 0
