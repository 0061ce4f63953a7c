"""The report's interval arithmetic against scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from actsweep.study.intervals import Interval, direction, paired_differences, t_interval
from actsweep.study.paired import paired_markdown, paired_table
from actsweep.study.sweep import default_comparisons


@pytest.mark.parametrize("values", [[1.0, 2.0], [2.5, 2.7, 2.4, 2.9, 2.6], [0.1, -0.3, 0.2]])
def test_t_interval_matches_scipy(values):
    got = t_interval(values)
    low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert (got.mean, got.low, got.high, got.n) == pytest.approx((np.mean(values), low, high, len(values)), rel=1e-12)


def test_t_interval_by_hand():
    # [1, 2, 2, 3]: mean 2, s = sqrt(2/3), half-width t(0.975, 3) * s / sqrt(4)
    got = t_interval([1.0, 2.0, 2.0, 3.0])
    assert got.n == 4 and got.mean == pytest.approx(2.0)
    assert got.high - got.mean == pytest.approx(3.182446305284263 * math.sqrt(2 / 3) / 2, rel=1e-9)
    # [0, 1] at 90 %: s / sqrt(2) = 0.5, t(0.95, 1) = 6.313751514675
    assert t_interval([0.0, 1.0], confidence=0.9).high == pytest.approx(0.5 + 6.313751514675 * 0.5, rel=1e-9)


def test_t_interval_edges():
    one = t_interval([3.0, math.nan, math.inf])
    assert one.n == 1 and one.mean == 3.0 and math.isnan(one.low) and one.text(2) == "3.00 [n=1]"
    assert t_interval([]).n == 0 and t_interval([]).text(3) == ""
    assert all(math.isnan(v) for v in (t_interval([]).mean, t_interval([]).low, t_interval([]).high, one.high))
    assert Interval(0.0425, -0.01, 0.0951, 2).text(3, signed=True) == "+0.043 [-0.010, +0.095]"


def test_paired_differences_keep_shared_finite_seeds():
    assert paired_differences({0: 2.0, 1: 3.0, 2: 1.0, 3: math.nan}, {1: 2.5, 0: 1.0, 3: 1.0, 4: 0.0}) == {0: 1.0, 1: 0.5}


@pytest.mark.parametrize("low, high, n, claim", [
    (-0.2, -0.01, 5, "relu lower"), (0.01, 0.3, 5, "gelu lower"), (-0.1, 0.1, 5, "unresolved"),
    (-0.2, 0.0, 5, "unresolved"), (0.0, 0.2, 5, "unresolved"), (math.nan, math.nan, 1, "unresolved"),
    (-0.2, -0.01, 2, "relu lower"), (0.01, 0.3, 2, "gelu lower"),  # two seeds are enough for a claim
])
def test_direction_only_where_the_interval_excludes_zero(low, high, n, claim):
    assert direction(Interval((low + high) / 2, low, high, n), "relu", "gelu") == claim


def test_default_comparisons_against_the_first_value():
    got = default_comparisons({"model.activation": ["relu", "gelu", "relu", "silu"], "model.norm": ["layernorm"],
                               "model.hybrid": [["relu", "gelu"], ["gelu", "relu"]]})
    assert [(c["key"], c["a"], c["b"]) for c in got] == [("model.activation", "gelu", "relu"), ("model.activation", "silu", "relu")]


def runs_frame() -> pd.DataFrame:
    rows = []
    loss = {("relu", "layernorm"): [2.0, 2.2, 2.1], ("gelu", "layernorm"): [2.1, 2.35, 2.2],
            ("relu", "none"): [2.5, 2.6, 2.9], ("gelu", "none"): [2.4, 2.9, 2.7]}
    for (act, norm), values in loss.items():
        for seed, v in enumerate(values):
            rows.append({"model.activation": act, "model.norm": norm, "seed": seed, "val_loss": v,
                         "status": "Stable" if (act, norm, seed) != ("gelu", "none", 2) else "Diverged"})
    return pd.DataFrame(rows)


def test_paired_table_pairs_by_seed_within_each_setting():
    table = paired_table(runs_frame(), [{"key": "model.activation", "a": "gelu", "b": "relu"}],
                         ["model.activation", "model.norm"])
    ln = table[table["at"] == "norm=layernorm"].iloc[0]
    assert ln.n == 3 and ln["mean"] == pytest.approx(np.mean([0.1, 0.15, 0.1]))
    assert ln.direction == "relu lower"  # every seed favours relu: the interval excludes zero
    none = table[table["at"] == "norm=none"].iloc[0]
    assert none.n == 2 and none.per_seed == "0: -0.100, 1: +0.300"  # seed 2 diverged on one side
    assert none.direction == "unresolved"
    text = paired_markdown(table)
    assert "| gelu − relu | norm=layernorm | val_loss | 3 | +0.117 [" in text and "excludes zero" in text


def test_a_setting_without_the_other_side_in_the_grid_has_no_row():
    runs = runs_frame()
    hybrid = pd.DataFrame([{"model.activation": "relu-gelu", "model.norm": "none", "seed": s, "val_loss": 2.5,
                            "status": "Stable"} for s in range(3)])  # run LayerNorm-free only
    table = paired_table(pd.concat([runs, hybrid]), [{"key": "model.norm", "a": "none", "b": "layernorm"}],
                         ["model.activation", "model.norm"])
    assert list(table["at"]) == ["activation=relu", "activation=gelu"]
    runs["saturated_pct"] = [math.nan] * 6 + [1.0, 2.0, 3.0, 2.0, 4.0, 4.0]  # only the LN-free runs have it
    table = paired_table(runs, [{"key": "model.norm", "a": "none", "b": "layernorm", "metric": "saturated_pct"}],
                         ["model.activation", "model.norm"])
    assert list(table["at"]) == ["activation=relu", "activation=gelu"] and list(table.n) == [0, 0]
    runs.loc[runs["model.activation"] == "relu", "saturated_pct"] = math.nan  # relu runs lack the metric
    table = paired_table(runs, [{"key": "model.norm", "a": "none", "b": "layernorm", "metric": "saturated_pct"}],
                         ["model.activation", "model.norm"])
    assert list(table["at"]) == ["activation=gelu"]
    runs.loc[runs["model.norm"] == "layernorm", "status"] = "Running"  # in the grid, not finished yet
    table = paired_table(runs, [{"key": "model.norm", "a": "none", "b": "layernorm"}], ["model.activation", "model.norm"])
    assert list(table.n) == [0, 0] and list(table.direction) == ["unresolved", "unresolved"]


def test_the_cpu_study_names_its_comparisons():
    from actsweep.study.sweep import load_sweep

    study = load_sweep("configs/sweeps/cpu_study.yaml")
    assert len(study.runs()) == 90 and study.seeds == [0, 1, 2, 3, 4] and study.threads == 1
    headline = [r.seed for r in study.runs() if r.overrides == {"model.activation": "relu", "model.norm": "none"}]
    assert headline == list(range(10))  # the LayerNorm-free headline's own seeds
    assert {"key": "model.activation", "a": ["relu", "relu", "gelu", "gelu"], "b": "relu", "metric": "val_loss",
            "primary": True} in study.comparisons
    assert sum(bool(c.get("primary")) for c in study.comparisons) == 10  # 18 rows: some have several settings
    assert [c["across"] for c in study.comparisons if "across" in c] == [
        {"key": "model.lr", "a": 1e-3, "b": None}, {"key": "model.lr", "a": 1e-2, "b": None}]
    assert study.comparisons[-5]["metric"] == "slope"
    assert [(c["metric"], c["family"]) for c in study.comparisons[-4:]] == [
        (f"entropy_frac_layer_{i}", "entropy by layer") for i in range(4)]
