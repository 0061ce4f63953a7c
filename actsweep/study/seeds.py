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
import sys
from pathlib import Path

from actsweep.study.claims import METHODS, POWER
from actsweep.study.results import load_study
from actsweep.study.review_text import plan_markdown
from actsweep.study.sweep import SweepError


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
    try:
        study = load_study(args.source, args.sweep, args.adjust)
    except (SweepError, FileNotFoundError, NotADirectoryError) as err:
        print(f"actsweep plan-seeds: error: {err}", file=sys.stderr)
        return 2
    print(plan_markdown(study.plan_seeds(args.effect, args.metric, args.power, not args.all), args.power))
    return 0
