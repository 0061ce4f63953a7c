"""The adjusted table's rules (actsweep.study.review) on small hand-built tables, each number against
statsmodels or scipy: families, the chosen correction and α, claims and their direction, MDEs at the
asked power, the TOST at α/m, outlier arms and their reasons, sensitivity rows and the seed plan.
Fast: these are the tests bench/mutation.sh runs against review.py's mutants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from actsweep.study.paired import difference_row
from actsweep.study.review import claims_table, family_of, outlier_runs, planned_rows, seed_plan

SPREAD = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
RELU_GELU = {"key": "model.activation", "a": "relu", "b": "gelu"}


def row_with_p(p: float, at: str, scale: float = 1.0, runs: dict[int, tuple[str, ...]] | None = None) -> dict:
    """A paired row of five differences (relu − gelu) whose two-sided t-test p is `p`, its spread `scale`."""
    spread = SPREAD * scale
    se = spread.std(ddof=1) / math.sqrt(5)
    d = dict(enumerate(spread + scipy.stats.t.ppf(1 - p / 2, 4) * se))
    return row_of(d, at, runs)


def row_of(d: dict[int, float], at: str, runs: dict[int, tuple[str, ...]] | None = None, declared: int = 0) -> dict:
    return {"comparison": "relu − gelu", "key": "model.activation", "metric": "val_loss", "at": at,
            "declared": declared, **difference_row(d, "relu", "gelu"), "differences": d,
            "runs": runs or {s: (f"{at}-{s}",) for s in d}, "side_a": "relu", "side_b": "gelu"}


def judged(rows: list[dict], comparisons: list[dict] | None = None, flagged: dict[str, str] | None = None,
           **options) -> pd.DataFrame:
    return claims_table(pd.DataFrame(rows), comparisons or [{**RELU_GELU, "primary": True}], flagged or {}, **options)


def test_family_names():
    assert family_of({**RELU_GELU, "family": "lr", "primary": True}, 0) == "lr"  # a named family wins
    assert family_of({**RELU_GELU, "primary": True}, 4) == "primary"
    assert family_of(RELU_GELU, 2) == "#3: relu − gelu (val_loss)"  # a family of its own, named by its place
    assert family_of({**RELU_GELU, "metric": "act_mean"}, 0) == "#1: relu − gelu (act_mean)"


@pytest.mark.parametrize("method, name", [("holm", "holm"), ("bonferroni", "bonferroni"), ("bh", "fdr_bh")])
def test_the_chosen_correction_decides_and_holm_and_bh_stand_beside_it(method, name):
    p = [0.001, 0.012, 0.02, 0.04]
    table = judged([row_with_p(v, f"x={i}") for i, v in enumerate(p)], method=method)
    assert list(table.p) == pytest.approx(p) and (table.m == 4).all() and set(table.method) == {method}
    assert set(table.key) == {"model.activation"} and set(table.comparison) == {"relu − gelu"}
    assert list(table.p_adj) == pytest.approx(multipletests(p, method=name)[1])
    assert list(table.p_holm) == pytest.approx(multipletests(p, method="holm")[1])
    assert list(table.p_bh) == pytest.approx(multipletests(p, method="fdr_bh")[1])
    rejected = multipletests(p, alpha=0.05, method=name)[0]
    assert list(table.claim != "unresolved") == list(rejected)


def test_alpha_sets_the_levels_and_the_claims():
    p = [0.001, 0.03, 0.08, 0.3]
    table = judged([row_with_p(v, f"x={i}") for i, v in enumerate(p)], alpha=0.2)
    # Holm at α = 0.2: ranks 1..4 get α/4, α/3, α/2, α/1; every step passes until 0.3 > 0.2
    assert list(table.level) == pytest.approx([0.2 / 4, 0.2 / 3, 0.2 / 2, 0.2 / 1])
    assert list(table.claim) == ["gelu lower", "gelu lower", "gelu lower", "unresolved"]
    for r in table.itertuples():  # the interval at the row's level
        interval = scipy.stats.t.interval(1 - r.level, 4, loc=r.mean, scale=r.sd / math.sqrt(5))
        assert (r.adj_low, r.adj_high) == pytest.approx(interval)
    assert list(judged([row_with_p(v, f"x={i}") for i, v in enumerate(p)]).claim) == \
        ["gelu lower", "unresolved", "unresolved", "unresolved"]  # α = 0.05: 0.03 · 3 > 0.05


def test_a_claim_names_the_lower_side():
    rows = [row_of({s: 1.0 + 0.01 * s for s in range(5)}, "x=0"), row_of({s: -1.0 - 0.01 * s for s in range(5)}, "x=1")]
    assert list(judged(rows).claim) == ["gelu lower", "relu lower"]


def test_an_untestable_row_has_no_interval_mde_or_tost():
    rows = [row_of({s: 0.5 for s in range(5)}, "x=0"), row_of({0: 0.5}, "x=1"), row_with_p(0.5, "x=2")]
    table = judged(rows, [{**RELU_GELU, "primary": True, "equivalence": 0.3}])
    assert list(table.claim) == ["untestable", "untestable", "unresolved"] and list(table.m) == [1, 1, 1]
    untestable = table.iloc[:2]
    assert untestable.adj_low.isna().all() and untestable.adj_high.isna().all() and untestable.mde.isna().all()
    assert untestable.equivalence.isna().all() and untestable.p_tost.isna().all()


@pytest.mark.parametrize("power", [0.8, 0.9])
def test_the_mde_is_at_the_rows_level_and_the_asked_power(power):
    table = judged([row_with_p(v, f"x={i}") for i, v in enumerate([0.2, 0.5])], power=power)
    for r in table.itertuples():
        standardized = TTestPower().solve_power(nobs=5, alpha=r.level, power=power, alternative="two-sided")
        assert r.claim == "unresolved" and r.mde == pytest.approx(standardized * r.sd, rel=1e-6)


def test_equivalence_is_judged_at_alpha_over_m_against_the_declared_bound():
    bound, m = 0.2, 4
    # unresolved rows near zero; the first tight enough for α/m, the second only for α
    tight, loose = row_with_p(0.6, "x=0", scale=0.05), row_with_p(0.6, "x=1", scale=0.17)
    rows = [tight, loose, row_with_p(0.7, "x=2"), row_with_p(0.8, "x=3")]
    table = judged(rows, [{**RELU_GELU, "primary": True, "equivalence": bound}])
    p_tost = [ttost_paired(np.array(list(r["differences"].values())), np.zeros(5), -bound, bound)[0] for r in rows]
    assert list(table.p_tost) == pytest.approx(p_tost) and (table.equivalence_bound == bound).all()
    assert p_tost[0] < 0.05 / m < p_tost[1] < 0.05  # the second passes at α but not at α/m
    assert list(table.equivalence[:2]) == ["equivalent within ±0.2", "inconclusive"]
    no_bound = judged(rows)  # without a declared bound: no TOST at all
    assert set(no_bound.equivalence) == {"no bound declared"} and no_bound.p_tost.isna().all()


def arm_runs() -> pd.DataFrame:
    """Arms of five seeds, one far-off run in arms A, C and D (seeds 4, 4 and 2); B has none."""
    base = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}
    far = {("A", 4): 5.0, ("C", 4): 9.0, ("D", 2): 0.0}
    jitter = [0.0, 0.01, -0.01, 0.005, -0.005]
    rows = [{"run": f"{arm}{s}", "config": arm, "seed": s, "status": "Stable",
             "val_loss": far.get((arm, s), base[arm] + jitter[s])} for arm in base for s in range(5)]
    return pd.DataFrame(rows)


def test_outliers_are_flagged_within_their_arm_with_why():
    runs = arm_runs()
    flagged = outlier_runs(runs)
    assert list(flagged) == ["A4", "C4", "D2"]  # in the runs' order
    assert flagged["A4"] == "val_loss 5.000 (other seeds 1.000, 1.010, 0.990, 1.005)"
    runs.loc[runs.run == "A4", "status"] = "Diverged"  # only finished runs count
    assert list(outlier_runs(runs)) == ["C4", "D2"]


def test_the_arms_are_the_configs_in_the_runs_order():
    runs = arm_runs()
    runs["config"] = runs.config.map({"A": "relu", "B": "gelu", "C": "gelu", "D": "relu"})
    # two arms of two levels each: A4 and D2 lie within theirs, C4 (9.0) still outside
    assert list(outlier_runs(runs)) == ["C4"]
    renamed = arm_runs().assign(config=lambda r: r.config.map({"A": "z", "B": "y", "C": "x", "D": "w"}))
    assert list(outlier_runs(renamed)) == ["A4", "C4", "D2"]  # not sorted by arm name (that gives D2, C4, A4)


def test_a_run_far_off_in_two_statistics_gives_both_reasons_and_the_level_is_a_setting():
    runs = arm_runs()[lambda r: r.config == "A"].assign(grad_norm=[1.0, 1.1, 0.9, 1.05, 7.0])
    assert outlier_runs(runs)["A4"] == ("val_loss 5.000 (other seeds 1.000, 1.010, 0.990, 1.005); "
                                        "grad_norm 7.000 (other seeds 1.000, 1.100, 0.900, 1.050)")
    mild = runs.assign(val_loss=[1.0, 1.01, 0.99, 1.005, 1.06], grad_norm=1.0)
    # 1.06 against the 4 others' prediction interval: t = 6.2 with 3 df, beyond 0.99's, inside 0.999's
    t = (1.06 - np.mean([1.0, 1.01, 0.99, 1.005])) / (np.std([1.0, 1.01, 0.99, 1.005], ddof=1) * math.sqrt(1 + 1 / 4))
    assert scipy.stats.t.ppf(0.995, 3) < t < scipy.stats.t.ppf(0.9995, 3)
    assert outlier_runs(mild) == {} and list(outlier_runs(mild, outlier_p=0.01)) == ["A4"]


def test_each_row_a_flagged_run_feeds_is_shown_again_without_it():
    runs = arm_runs()
    pairs_ac = {s: (f"A{s}", f"C{s}") for s in range(5)}
    pairs_ad = {s: (f"A{s}", f"D{s}") for s in range(5)}
    pairs_b = {s: (f"B{s}",) for s in range(5)}
    rows = [row_of({s: -0.1 + 0.01 * s for s in range(5)}, "x=0", pairs_ac),
            row_of({s: 0.03 * (-1) ** s for s in range(5)}, "x=1", pairs_ad),
            row_of({s: 0.05 + 0.01 * s for s in range(5)}, "x=2", pairs_b),
            row_of({s: 0.2 + 0.01 * s for s in range(5)}, "x=3", pairs_ac)]
    table = judged(rows, [{**RELU_GELU, "primary": True, "equivalence": 0.5}], outlier_runs(runs))
    assert list(table.kind) == ["comparison", "without outliers"] * 2 + ["comparison"] + ["comparison", "without outliers"]
    assert list(table.without) == ["", "seed 4: A4, C4", "", "seed 2: D2; seed 4: A4", "", "", "seed 4: A4, C4"]
    without = table[table.kind == "without outliers"]
    assert list(without.n) == [4, 3, 4] and list(without.direction) == ["relu lower", "unresolved", "gelu lower"]
    assert without.iloc[0]["mean"] == pytest.approx(np.mean([-0.1, -0.09, -0.08, -0.07]))
    assert without.iloc[1].equivalence_bound == 0.5 and without.iloc[1].claim == "unresolved"
    # the sensitivity rows are adjusted as a family of their own p-values (the B row unchanged)
    p_without = [without.iloc[0].p, without.iloc[1].p, table.iloc[4].p, without.iloc[2].p]
    assert list(without.p_adj) == pytest.approx(multipletests(p_without, method="holm")[1][[0, 1, 3]])
    # at a looser outlier level more runs are flagged, and their rows are shown again too
    loose = judged(rows, [{**RELU_GELU, "primary": True}],
                   outlier_runs(runs.assign(val_loss=runs.val_loss + 0.003 * runs.seed ** 3), outlier_p=0.5))
    assert (loose.kind == "without outliers").sum() == 4


def plan_claims() -> pd.DataFrame:
    base = {"family": "primary", "primary": True, "kind": "comparison", "without": "", "metric": "val_loss",
            "comparison": "relu − gelu", "at": "x=0", "n": 5, "sd": 0.1, "m": 3}
    return pd.DataFrame([base, {**base, "at": "x=1", "sd": 0.2}, {**base, "at": "x=2", "n": 1, "sd": math.nan, "m": 0},
                         {**base, "primary": False, "family": "other", "m": 1}, {**base, "metric": "act_mean"}])


def test_planned_rows_are_the_primary_ones_of_the_metric_by_default():
    assert list(planned_rows(plan_claims(), "val_loss")["at"]) == ["x=0", "x=1", "x=2"]
    assert list(planned_rows(plan_claims(), "val_loss", primary_only=False)["at"]) == ["x=0", "x=1", "x=2", "x=0"]
    assert list(planned_rows(plan_claims().assign(primary=False), "val_loss")["at"]) == ["x=0", "x=1", "x=2", "x=0"]


@pytest.mark.parametrize("power", [0.8, 0.9])
def test_the_seed_plan_at_the_family_level_and_the_asked_power(power):
    claims = plan_claims()
    claims.loc[1, ["kind", "comparison"]] = ["without outliers", "relu − gelu without"]
    plan = seed_plan(claims, 0.1, power=power)
    assert list(plan.metric) == ["val_loss"] * 3 and (plan.effect == 0.1).all()
    assert list(plan.kind) == ["comparison", "without outliers", "comparison"]
    assert list(plan.comparison) == ["relu − gelu", "relu − gelu without", "relu − gelu"]
    for r in plan.iloc[:2].itertuples():
        assert r.level == pytest.approx(0.05 / 3)
        needed = TTestPower().solve_power(effect_size=0.1 / r.sd, alpha=0.05 / 3, power=power, alternative="two-sided")
        assert r.seeds == math.ceil(needed)
        assert r.power_now == pytest.approx(TTestPower().power(0.1 / r.sd, 5, 0.05 / 3, alternative="two-sided"))
    assert math.isnan(plan.level.iloc[2]) and math.isnan(plan.seeds.iloc[2])  # an untestable row: no family level


def test_an_empty_plan_keeps_its_columns():
    columns = ["family", "comparison", "kind", "without", "at", "metric", "m", "level", "n", "sd", "effect",
               "power_now", "seeds"]
    assert list(seed_plan(plan_claims(), 0.1, metric="grad_norm").columns) == columns
    assert list(seed_plan(pd.DataFrame(), 0.1).columns) == columns
