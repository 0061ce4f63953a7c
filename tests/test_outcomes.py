"""The report's rules (`actsweep.study.outcomes`) on hand-built scalar series: every boundary of the
Unstable, Diverged and configuration rules, the final slope and the fp16 flag. Fast: no runs."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from actsweep.study.logs import RunLog
from actsweep.study.outcomes import (
    UNSTABLE_RULE,
    config_status,
    final_saturation,
    final_slope,
    nonfinite_origin,
    precision_flag,
    run_outcome,
    skipped_share,
    unstable_reason,
)


def series(values: list[float], every: int = 10) -> pd.Series:
    return pd.Series(values, index=[every * (i + 1) for i in range(len(values))], dtype=float)


def at(points: dict[int, float]) -> pd.Series:
    return pd.Series(points, dtype=float)


@pytest.mark.parametrize("train, val, unstable", [
    ([4.0, 3.0, 2.5, 2.4, 2.3], [3.0, 2.5], False),
    ([4.0, 3.0, 2.5, 4.0, 2.3], [3.0, 2.5], True),  # a spike to 1.6x the running minimum
    ([4.0, 3.0, 2.5, 2.4, 2.3], [2.5, 2.8], True),  # ends 12% above its best
    ([9.0, 3.0, 2.5, 2.4, 2.3], [2.5, 2.5], False),  # high first loss is not a spike
])
def test_unstable_rule(train, val, unstable):
    reason = unstable_reason({"train/loss": series(train), "val/loss": series(val, 25)})
    assert bool(reason) == unstable


def test_unstable_reasons_and_their_boundaries():
    assert unstable_reason({"val/loss": at({5: 2.5, 10: 2.8})}) == "final val loss 2.800 > 1.1 × best 2.500"
    assert unstable_reason({"val/loss": at({5: 2.5, 10: 2.9, 15: 2.6})}) == ""  # only the final value counts
    assert unstable_reason({"val/loss": at({5: 2.5, 10: 2.6, 15: 2.8})}) == "final val loss 2.800 > 1.1 × best 2.500"
    assert unstable_reason({"val/loss": at({5: 2.0, 10: 2.2})}) == ""  # exactly 10% above: not more than
    assert unstable_reason({"val/loss": at({})}) == "" and unstable_reason({}) == ""
    steps = {s: 2.0 for s in range(0, 101, 10)}
    assert unstable_reason({"train/loss": at({**steps, 10: 3.5})}) == "train loss spike to 3.500 at step 10"  # 10% in
    assert unstable_reason({"train/loss": at({**steps, 10: 3.0})}) == ""  # exactly 1.5x: not a spike
    assert unstable_reason({"train/loss": at({**steps, 5: 3.5})}) == ""  # within the first 10% of steps
    assert unstable_reason({"train/loss": at({0: 2.0, 10: 4.0})}) == "train loss spike to 4.000 at step 10"
    assert unstable_reason({"train/loss": at({10: 4.0})}) == ""
    # Relative to the lowest loss BEFORE it: 2.0 after 1.0 is a spike even though 2.0 was seen earlier.
    assert unstable_reason({"train/loss": at({0: 2.0, 50: 1.0, 100: 2.0})}) == "train loss spike to 2.000 at step 100"
    # The first spike is reported; a val-loss reason comes first.
    two = at({0: 2.0, 50: 3.5, 100: 4.0})
    assert unstable_reason({"train/loss": two}) == "train loss spike to 3.500 at step 50"
    assert unstable_reason({"train/loss": two, "val/loss": at({5: 1.0, 10: 2.0})}).startswith("final val loss")


def outcome(status: dict, **scalars: pd.Series) -> tuple[str, str]:
    return run_outcome(RunLog(Path("."), {}, status, {k.replace("_loss", "/loss"): v for k, v in scalars.items()}))


def test_run_outcomes():
    fine = at({10: 3.0, 20: 2.9})
    assert outcome({"status": "finished"}, train_loss=fine, val_loss=fine) == ("Stable", "")
    assert outcome({"status": "finished"}, val_loss=at({10: 2.0, 20: 3.0}))[0] == "Unstable"
    assert outcome({"status": "diverged", "reason": "non-finite weights at step 3"}) == (
        "Diverged", "non-finite weights at step 3")
    assert outcome({"status": "finished"}, val_loss=at({10: math.nan, 20: 3.0})) == ("Diverged", "non-finite loss")
    assert outcome({"status": "diverged", "reason": "non-finite training loss at step 3"},
                   **{"nonfinite/act/layer_1": at({2: 0.0, 3: 4.0})}) == (
        "Diverged", "non-finite training loss at step 3; first non-finite: layer 1 (act) at step 3")
    assert outcome({"status": "finished"}, train_loss=at({10: 3.0, 20: math.inf}))[0] == "Diverged"
    assert outcome({"status": "finished"}, train_loss=at({10: 3.0, 20: math.nan, 30: 3.0}))[0] == "Stable"  # the last counts
    assert outcome({"status": "crashed", "reason": "RuntimeError: boom"}) == ("Crashed", "RuntimeError: boom")
    assert outcome({"status": "crashed", "reason": "x"}, val_loss=at({10: math.nan}))[0] == "Diverged"
    assert outcome({}) == ("Unknown", "")
    assert outcome({"status": "running"}, val_loss=fine) == ("Running", "")


def test_nonfinite_origin_ignores_sites_that_stayed_finite():
    scalars = {"nonfinite/q/layer_0": at({1: 0.0, 5: 2.0}), "nonfinite/resid/layer_1": at({1: 0.0, 2: 3.0}),
               "nonfinite/act/layer_0": at({1: 0.0}), "nonfinite/grad/layer_1": at({2: 1.0})}
    assert nonfinite_origin(scalars) == "first non-finite: layer 1 (resid) at step 2"  # not layer 0's later NaN


@pytest.mark.parametrize("outcomes, status", [
    (["Stable", "Stable"], "Stable"),
    (["Stable", "Diverged", "Crashed"], "Diverged (1/3)"),
    (["Unstable", "Crashed"], "Incomplete (1/2)"),
    (["Stable", "Running", "Interrupted"], "Incomplete (2/3)"),
    (["Unstable", "Stable", "Unstable"], "Unstable (2/3)"),
])
def test_configuration_status(outcomes, status):
    assert config_status(pd.Series(outcomes)) == status


def test_final_slope():
    assert final_slope({"slope/global": at({1: 0.5, 2: 0.75, 3: 0.25}), "slope/layer_0": at({2: 9.0})}) == 0.25
    per_layer = {"slope/layer_0": at({1: 9.0, 2: 0.5}), "slope/layer_1/mean": at({2: 0.25}),
                 "slope/layer_1/std": at({2: 7.0}), "slope/other": at({2: 5.0})}
    assert final_slope(per_layer) == 0.375  # the per-layer value and the per-neuron mean; no std
    assert math.isnan(final_slope({"val/loss": at({1: 2.0})}))


def test_skipped_share_and_flag_by_hand():
    assert skipped_share({"amp/skipped_steps": at({0: 0.0, 99: 10.0})}) == 0.1  # steps 0..99
    assert skipped_share({"amp/skipped_steps": at({0: 1.0})}) == 1.0
    assert math.isnan(skipped_share({})) and math.isnan(skipped_share({"amp/skipped_steps": at({})}))
    assert precision_flag(0.1, 0.05) == "fp16 skipped 10.0% of optimizer steps (more than 5%)"
    assert precision_flag(0.06) == "fp16 skipped 6.0% of optimizer steps (more than 5%)"  # the default limit
    assert precision_flag(0.05, 0.05) == "" and precision_flag(math.nan) == "" and precision_flag(0.04) == ""


def test_the_rule_in_words_states_the_thresholds_applied():
    assert UNSTABLE_RULE == (
        "A run is **Unstable** when its final val loss exceeds its best val loss by more than 10%, or when, after "
        "the first 10% of its steps, a logged train loss exceeds 1.5× the lowest train loss logged before it (a "
        "spike). A run is **Diverged** when its training loss or any validation loss became non-finite (the run "
        "stops there and is not retried). A configuration is Diverged if any seed diverged, else Incomplete if "
        "any seed did not finish, else Unstable if any seed is unstable, else Stable. Val loss and ppl: mean over "
        "the seeds that finished (Stable or Unstable) with its two-sided 95 % Student-t interval, n = their number; "
        "other columns: mean over the same seeds of the last logged value.")


def test_final_saturation_is_the_mean_last_share_over_dynamic_norms():
    scalars = {"norm/saturated/attn/layer_0": at({10: 0.9, 20: 0.2}), "norm/saturated/ffn/layer_0": at({20: 0.4}),
               "norm/alpha/attn/layer_0": at({20: 7.0}), "ffn/inactive_frac": at({20: 5.0})}
    assert final_saturation(scalars) == pytest.approx(0.3)  # (0.2 + 0.4) / 2: last values, no other tags
    assert math.isnan(final_saturation({"val/loss": at({1: 2.0})}))
