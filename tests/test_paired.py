"""The paired table's pieces: a setting's and a comparison's text, one row of paired differences, the
table over a small grid and its markdown, against scipy and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from actsweep.study.paired import comparison_text, difference_row, paired_markdown, paired_table, setting_pairings, setting_text

NAMES = {"model.norm": "norm", "model.lr": "lr", "model.acts": "acts"}


def test_setting_text_names_the_values_a_run_has():
    row = pd.Series({"model.norm": "none", "model.lr": 0.001, "model.acts": ["relu", "gelu"]})
    assert setting_text(row, ["model.norm", "model.lr", "model.acts"], NAMES) == "norm=none, lr=1e-3, acts=relu-gelu"
    assert setting_text(row, ["model.lr", "model.norm"], NAMES) == "lr=1e-3, norm=none"  # in the keys' order
    unset = pd.Series({"model.norm": "none", "model.lr": math.nan, "model.acts": None})
    assert setting_text(unset, ["model.norm", "model.lr", "model.acts"], NAMES) == "norm=none"
    assert setting_text(unset, ["model.lr", "model.acts"], NAMES) == "all"
    assert setting_text(unset, [], NAMES) == "all"


def test_comparison_text():
    assert comparison_text({"key": "model.activation", "a": "relu", "b": "gelu"}) == "relu − gelu"
    assert comparison_text({"key": "model.norm", "a": None, "b": "dyt"}) == "base − dyt"
    assert comparison_text({"key": "model.lr", "a": 0.01, "b": None, "label": ""}) == "0.01 − base"
    assert comparison_text({"key": "model.lr", "a": 0.01, "b": None, "label": "higher lr"}) == "higher lr"
    assert comparison_text({"key": "k", "a": 1, "b": 2, "label": 7}) == "7"
    interaction = {"key": "model.activation", "a": "relu", "b": "gelu", "across": {"key": "model.lr", "a": 0.01, "b": None}}
    assert comparison_text(interaction) == "(relu − gelu) at lr=0.01 − at lr=base"
    flat = {"key": "activation", "a": "relu", "b": "gelu", "across": {"key": "optim.sched.warmup", "a": None, "b": 5}}
    assert comparison_text(flat) == "(relu − gelu) at warmup=base − at warmup=5"
    assert comparison_text({**flat, "across": {"key": "lr", "a": 1, "b": 2}}) == "(relu − gelu) at lr=1 − at lr=2"
    assert comparison_text({**flat, "across": None}) == "relu − gelu"


def test_difference_row_against_scipy():
    d = {0: -0.031, 1: -0.052, 2: -0.018, 3: -0.044, 4: -0.027}
    row = difference_row(d, "relu", "gelu")
    x = np.array(list(d.values()))
    half = scipy.stats.t.ppf(0.975, 4) * scipy.stats.sem(x)
    assert row["n"] == 5 and row["mean"] == pytest.approx(x.mean())
    assert (row["low"], row["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert row["sd"] == pytest.approx(np.std(x, ddof=1))
    assert row["p"] == pytest.approx(scipy.stats.ttest_1samp(x, 0).pvalue)
    assert row["p_signflip"] == pytest.approx(2 / 32)  # all five of one sign
    assert row["per_seed"] == "0: -0.031, 1: -0.052, 2: -0.018, 3: -0.044, 4: -0.027"
    assert row["direction"] == "relu lower"
    assert set(row) == {"n", "mean", "low", "high", "per_seed", "direction", "sd", "p", "p_signflip"}
    up = difference_row({3: 0.2, 7: 0.25, 9: 0.21}, "relu", "gelu")
    assert up["direction"] == "gelu lower" and up["per_seed"] == "3: +0.200, 7: +0.250, 9: +0.210"
    assert up["sd"] == pytest.approx(np.std([0.2, 0.25, 0.21], ddof=1))
    mixed = difference_row({0: 0.1, 1: -0.1, 2: 0.05}, "relu", "gelu")
    assert mixed["direction"] == "unresolved" and mixed["p_signflip"] == 1.0  # every |±0.1 ± 0.1 ± 0.05| ≥ 0.05
    two = difference_row({0: 0.1, 1: 0.3}, "a", "b")
    assert two["sd"] == pytest.approx(math.sqrt(0.02)) and two["n"] == 2
    one = difference_row({5: 0.1}, "a", "b")
    assert one["n"] == 1 and math.isnan(one["sd"]) and math.isnan(one["p"]) and one["direction"] == "unresolved"
    assert one["per_seed"] == "5: +0.100" and one["p_signflip"] == 1.0


def grid_runs() -> pd.DataFrame:
    """activation relu/gelu × norm layernorm/none, 3 seeds; gelu seed 2 at norm=none diverged."""
    rows = []
    for norm in ("layernorm", "none"):
        for seed in range(3):
            for act in ("relu", "gelu"):
                loss = 2.0 + 0.1 * seed + (0.2 if norm == "none" else 0) + (0.05 if act == "relu" else 0)
                loss += 0.01 * seed * (act == "relu")
                status = "Diverged" if (norm, act, seed) == ("none", "gelu", 2) else "Stable"
                rows.append({"run": f"{act}-{norm}-{seed}", "model.activation": act, "model.norm": norm, "seed": seed,
                             "val_loss": loss, "act_mean": 0.1 * seed + (act == "relu"), "status": status})
    return pd.DataFrame(rows)


def test_paired_table_by_hand():
    runs = grid_runs()
    comparisons = [{"key": "model.activation", "a": "relu", "b": "gelu"},  # val_loss by default
                   {"key": "model.activation", "a": "relu", "b": "gelu", "metric": "missing"},  # not in the runs
                   {"key": "model.depth", "a": 1, "b": 2},  # not a column
                   {"key": "model.activation", "a": "relu", "b": "gelu", "metric": "act_mean"},
                   {"key": "model.activation", "a": "relu", "b": "gelu", "across": {"key": "model.lr", "a": 1, "b": 2}},
                   {"key": "model.activation", "a": "gelu", "b": "relu"}]
    table = paired_table(runs, comparisons, ["model.activation", "model.norm", "model.lr"])
    assert list(table.declared) == [0, 0, 3, 3, 5, 5]
    assert list(table["at"]) == ["norm=layernorm", "norm=none"] * 3
    assert list(table.metric) == ["val_loss"] * 2 + ["act_mean"] * 2 + ["val_loss"] * 2
    reverse, table = table.iloc[4:], table.iloc[:4]
    assert (table.comparison == "relu − gelu").all() and (table.key == "model.activation").all()
    assert (table.side_a == "relu").all() and (table.side_b == "gelu").all()
    assert (reverse.comparison == "gelu − relu").all() and reverse.iloc[0].direction == "gelu lower"
    assert reverse.iloc[0].differences == pytest.approx({0: -0.05, 1: -0.06, 2: -0.07})
    ln, free = table.iloc[0], table.iloc[1]
    assert ln.differences == pytest.approx({0: 0.05, 1: 0.06, 2: 0.07})
    assert free.differences == pytest.approx({0: 0.05, 1: 0.06})  # the diverged gelu seed 2 is left out
    assert free.runs == {0: ("relu-none-0", "gelu-none-0"), 1: ("relu-none-1", "gelu-none-1")}
    assert ln.n == 3 and ln["mean"] == pytest.approx(0.06) and ln.sd == pytest.approx(0.01)
    assert ln.p == pytest.approx(scipy.stats.ttest_1samp([0.05, 0.06, 0.07], 0).pvalue)
    assert ln.direction == "gelu lower" and ln.per_seed == "0: +0.050, 1: +0.060, 2: +0.070"
    assert table.iloc[2].differences == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0})
    assert paired_table(runs, [], ["model.activation"]).empty
    no_runs = pd.DataFrame(columns=runs.columns)  # no runs yet
    assert setting_pairings(no_runs, "model.activation", "relu", "gelu", "val_loss", ["model.norm"], NAMES) == {}
    assert paired_table(no_runs, comparisons, ["model.activation", "model.norm"]).empty
    as_text = runs.astype({"status": "string", "model.activation": "string"})  # pandas' string dtype
    assert setting_pairings(as_text.iloc[:0], "model.activation", "relu", "gelu", "val_loss", ["model.norm"], NAMES) == {}
    assert setting_pairings(as_text, "model.activation", "relu", "gelu", "val_loss", ["model.norm"],
                            NAMES)["norm=layernorm"].differences == pytest.approx({0: 0.05, 1: 0.06, 2: 0.07})


def test_paired_table_of_an_interaction_names_its_sides():
    runs = pd.concat([grid_runs().assign(**{"model.lr": lr, "val_loss": grid_runs().val_loss * scale,
                                            "run": grid_runs().run + f"-{lr}"})
                      for lr, scale in ((0.01, 2.0), (0.001, 1.0))], ignore_index=True)
    comparison = {"key": "model.activation", "a": "relu", "b": "gelu", "across": {"key": "model.lr", "a": 0.01, "b": 0.001}}
    table = paired_table(runs, [comparison], ["model.activation", "model.norm", "model.lr"])
    assert list(table["at"]) == ["norm=layernorm", "norm=none"]
    assert (table.side_a == "at 0.01").all() and (table.side_b == "at 1e-3").all()
    assert (table.comparison == "(relu − gelu) at lr=0.01 − at lr=1e-3").all()
    # (relu − gelu) doubles at lr 1e-2, so the interaction is the difference at 1e-3 once more
    assert table.iloc[0].differences == pytest.approx({0: 0.05, 1: 0.06, 2: 0.07})
    assert table.iloc[0].direction == "at 1e-3 lower" and table.iloc[0].metric == "val_loss"
    assert table.iloc[1].runs[0] == ("relu-none-0-0.01", "gelu-none-0-0.01", "relu-none-0-0.001", "gelu-none-0-0.001")


def test_paired_markdown():
    assert paired_markdown(pd.DataFrame()) == ""
    runs = grid_runs()
    table = paired_table(runs, [{"key": "model.activation", "a": "relu", "b": "gelu"}], ["model.activation", "model.norm"])
    lines = paired_markdown(table).split("\n")
    assert lines[0] == "| comparison | at | metric | n | mean difference [95 % CI] | per seed | direction (unadjusted) |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    half = scipy.stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    ci = f"+0.060 [+{0.06 - half:.3f}, +{0.06 + half:.3f}]"
    assert lines[2] == f"| relu − gelu | norm=layernorm | val_loss | 3 | {ci} | 0: +0.050, 1: +0.060, 2: +0.070 | gelu lower |"
    assert lines[3].startswith("| relu − gelu | norm=none | val_loss | 2 | +0.055 [")
    assert lines[4] == "" and len(lines) == 6
    assert lines[5] == ("Differences are paired by seed (same initial weights and training windows) over seeds that "
                        "finished on both sides; the interval is a two-sided 95 % Student-t interval of the mean "
                        "difference, not adjusted for the number of comparisons. The direction column reads that "
                        "unadjusted interval (a side where it excludes zero) and is no claim: claims are made only in "
                        "the adjusted table, within each family.")
