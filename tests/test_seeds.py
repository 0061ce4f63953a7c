"""The seed planner: power and seeds of a paired t-test against statsmodels, scipy's noncentral t and
hand (G*Power) cases; the plan's rows and level; `actsweep plan-seeds` on the committed CPU study."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from actsweep.study.claims import _power_by_mixture, paired_power, seeds_for_power
from actsweep.study.review import seed_plan
from actsweep.study.review_text import plan_markdown

ROOT = Path(__file__).resolve().parents[1]
CPU_CSV, CPU_SWEEP = ROOT / "docs/results/cpu_study/results.csv", ROOT / "configs/sweeps/cpu_study.yaml"


def nct_power(d: float, n: int, alpha: float) -> float:
    """The two-sided one-sample t-test's power straight from scipy's noncentral t."""
    c = stats.t.ppf(1 - alpha / 2, n - 1)
    return stats.nct.sf(c, n - 1, d * math.sqrt(n)) + stats.nct.cdf(-c, n - 1, d * math.sqrt(n))


@pytest.mark.parametrize("effect, sd, alpha", [(0.5, 1.0, 0.05), (0.085, 0.148, 0.05), (0.085, 0.148, 0.05 / 14),
                                               (0.03, 0.02, 0.01), (1.0, 1.0, 0.05)])
def test_seeds_are_statsmodels_solve_power_rounded_up_and_the_fewest(effect, sd, alpha):
    solved = TTestPower().solve_power(effect_size=effect / sd, nobs=None, alpha=alpha, power=0.8)
    n = seeds_for_power(effect, sd, alpha)
    assert n == math.ceil(solved)
    assert nct_power(effect / sd, n, alpha) >= 0.8 > nct_power(effect / sd, n - 1, alpha)


def test_hand_cases():
    # G*Power, one-sample t, two-tailed α 0.05, power 0.8: d = 0.5 needs 34, d = 1 needs 10
    assert seeds_for_power(0.5, 1.0) == 34 and seeds_for_power(2.0, 2.0) == 10
    assert seeds_for_power(-0.5, 1.0) == 34  # the sign of the effect does not matter
    # with 2 seeds (1 degree of freedom) d = 10 has power 0.73 only, d = 30 has 0.999: 3 seeds, then 2
    assert seeds_for_power(10.0, 1.0) == 3 and seeds_for_power(30.0, 1.0) == 2
    assert seeds_for_power(0.5, 1.0, power=0.9) > 34
    assert all(math.isnan(seeds_for_power(0.1, sd)) for sd in (0.0, math.nan, -1.0))
    assert paired_power(0.085, 0.148, 5) == pytest.approx(nct_power(0.085 / 0.148, 5, 0.05))


def test_power_where_scipy_gives_nan_is_the_mixture_and_rises_with_seeds():
    for d, n, alpha in [(0.5, 10, 0.05), (1.0, 5, 0.01), (2.0, 3, 0.05 / 14)]:
        assert _power_by_mixture(d, n, alpha) == pytest.approx(nct_power(d, n, alpha), rel=1e-8)
    assert math.isnan(TTestPower().power(effect_size=0.085 / 0.013, nobs=3, alpha=0.05 / 14))  # statsmodels' gap
    powers = [paired_power(0.085, 0.013, n, 0.05 / 14) for n in range(2, 7)]
    assert all(np.diff(powers) > 0) and powers[-1] > 0.999
    # 0.085 over a paired SD of 0.013 at α/14: 3 seeds fall short, 4 reach 80 %
    assert powers[1] < 0.8 <= powers[2] and seeds_for_power(0.085, 0.013, 0.05 / 14) == 4


def claims_rows(**extra) -> pd.DataFrame:
    base = {"family": "primary", "primary": True, "kind": "comparison", "without": "", "metric": "val_loss", "m": 4,
            "comparison": "relu − gelu", "at": "norm=none", "n": 5, "sd": 0.148}
    rows = [base, {**base, "kind": "without outliers", "without": "seed 0: relu-none-0", "n": 4, "sd": 0.02},
            {**base, "metric": "slope"}, {**base, "primary": False, "family": "other", "m": 1, "sd": 0.05}]
    return pd.DataFrame(rows).assign(**extra)


def test_plan_rows_level_and_counts():
    plan = seed_plan(claims_rows(), 0.085)
    assert len(plan) == 2  # the primary val-loss comparison and its row without the flagged seed; no other metric or family
    row, without = plan.iloc[0], plan.iloc[1]
    assert row.level == 0.05 / 4 and row.seeds == seeds_for_power(0.085, 0.148, 0.05 / 4)
    assert row.power_now == pytest.approx(nct_power(0.085 / 0.148, 5, 0.05 / 4))
    assert without.n == 4 and without.seeds == seeds_for_power(0.085, 0.02, 0.05 / 4) < row.seeds
    assert "| … without seed 0 | norm=none | primary (4) |" in plan_markdown(plan)
    everything = seed_plan(claims_rows(), 0.085, primary_only=False)
    assert list(everything.family) == ["primary", "primary", "other"] and everything.level.iloc[2] == 0.05


@pytest.mark.slow  # a whole study recomputed: left out of the mutation run (tests/test_review.py serves it)
def test_plan_seeds_command_on_the_cpu_study(capsys):
    from actsweep.study.seeds import main

    assert main([str(CPU_CSV), "--sweep", str(CPU_SWEEP), "--effect", "0.085"]) == 0
    out = capsys.readouterr().out
    # ReLU's Revival's headline, LayerNorm-free at 3e-3: paired SD 0.116 over 10 seeds, 18 primary comparisons
    assert "| relu − gelu | norm=none | primary (18) | 0.00278 | 10 | 0.116 | 0.11 | 32 |" in out
    assert "| relu − gelu | norm=none, lr=1e-3 | primary (18) | 0.00278 | 10 | 0.0111 | 1 | 4 |" in out
    # without the flagged ReLU seed 0 the pairs are tighter (SD 0.068): 14 seeds, not 32
    assert "| … without seed 0 | norm=none | primary (18) | 0.00278 | 9 | 0.0684 | 0.4 | 14 |" in out
    assert main([str(CPU_CSV), "--effect", "0.085"]) == 2
    assert "give its sweep file" in capsys.readouterr().err
    from actsweep import cli

    with pytest.raises(SystemExit) as done:  # the `actsweep plan-seeds` command, --all: every val-loss row
        cli.main(["plan-seeds", str(CPU_CSV), "--sweep", str(CPU_SWEEP), "--effect", "0.085", "--all"])
    assert done.value.code == 0 and "| relu − gelu | norm=none | primary (18) |" in capsys.readouterr().out


@pytest.mark.slow  # a whole study recomputed: left out of the mutation run (tests/test_review.py serves it)
def test_a_study_read_from_the_committed_csv_gives_the_committed_claims(tmp_path):
    import actsweep

    study = actsweep.load_study(CPU_CSV, sweep=CPU_SWEEP)
    committed = pd.read_csv(CPU_CSV.with_name("claims.csv"))
    assert list(study.claims.columns) == list(committed.columns) and len(study.claims) == len(committed)
    for column in ("n", "mean", "p", "p_adj", "adj_low", "mde"):
        assert np.allclose(study.claims[column].astype(float), committed[column], equal_nan=True, rtol=1e-9)
    assert list(study.paired.columns) == list(pd.read_csv(CPU_CSV.with_name("paired.csv")).columns)
    assert "activation=relu,norm=none,seed=0" in study.outliers
    # from a CSV: no run logs, so no curves and of the figures only the forest plot
    assert study.curves("train/loss").empty and list(study.figures(tmp_path)) == ["Primary comparisons"]
