"""The report's rules (`actsweep.study.outcomes`) on hand-built scalar series: every boundary of the
Unstable, Diverged and configuration rules, the final slope and the fp16 flag. Fast: no runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actsweep.study.logs import RunLog
from actsweep.study.outcomes import (
    UNSTABLE_RULE,
    config_status,
    final_saturation,
    final_slope,
    layer_counts,
    nonfinite_origin,
    per_layer_finals,
    precision_flag,
    run_outcome,
    skipped_share,
    smoothed_train_loss,
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
        "spike), or when its training loss (a trailing mean over 10% of its logged values, at least 5) ends more than 10% above "
        "its lowest, or when its final val loss exceeds that smoothed final train loss by more than 10% (validation "
        "worse than the run's own late training: lost ground, or overfitting). A run is **Diverged** when its training loss or any validation loss became non-finite (the run "
        "stops there and is not retried; under DivergenceGuard's `nonfinite: skip` a step with non-finite gradients "
        "is skipped, counted per layer in the `skips by layer` column, and the run goes on). A configuration is Diverged if any seed diverged, else Incomplete if "
        "any seed did not finish, else Unstable if any seed is unstable, else Stable. Val loss and ppl: mean over "
        "the seeds that finished (Stable or Unstable) with its two-sided 95 % Student-t interval, n = their number; "
        "other columns: mean over the same seeds of the last logged value.")


def test_final_saturation_is_the_mean_last_share_over_dynamic_norms():
    scalars = {"norm/saturated/attn/layer_0": at({10: 0.9, 20: 0.2}), "norm/saturated/ffn/layer_0": at({20: 0.4}),
               "norm/alpha/attn/layer_0": at({20: 7.0}), "ffn/inactive_frac": at({20: 5.0})}
    assert final_saturation(scalars) == pytest.approx(0.3)  # (0.2 + 0.4) / 2: last values, no other tags
    assert math.isnan(final_saturation({"val/loss": at({1: 2.0})}))


# -- the training-curve rules on synthetic curves (one validation at the end, as every study run) ---------


def training_curve(points: int = 300, final: float = 2.2, rise: float = 0.0, noise: float = 0.05,
                   seed: int = 0) -> pd.Series:
    """A train loss decaying exponentially from ~4.5 to `final`, times (1 + `rise`) ramped in over the
    last third, with multiplicative batch noise of relative SD `noise`; logged every step from 1."""
    steps = np.arange(1, points + 1)
    clean = final + (4.5 - final) * np.exp(-steps / (points / 8))
    ramp = np.clip((steps - 2 * points / 3) / (points / 3), 0, 1)
    noisy = clean * (1 + rise * ramp) * (1 + noise * np.random.default_rng(seed).standard_normal(points))
    return pd.Series(noisy, index=steps)


def once(value: float, step: int = 300) -> pd.Series:
    return at({step: value})


@pytest.mark.parametrize("seed", range(5))
def test_a_healthy_noisy_run_validated_once_is_stable(seed):
    train = training_curve(seed=seed)
    assert unstable_reason({"train/loss": train, "val/loss": once(2.15)}) == ""
    # unsmoothed, its batch noise alone reads as "ended 10 % above its lowest": the smoothing is needed
    assert train.iloc[-10:].max() > 1.1 * train.min()


@pytest.mark.parametrize("seed", range(3))
def test_a_run_whose_training_loss_climbs_back_is_unstable_without_a_spike(seed):
    train = training_curve(rise=0.2, noise=0.03, seed=seed)  # +20 % over the last third, never a 1.5x jump
    assert not (train > 1.5 * train.cummin().shift(1)).iloc[30:].any()
    reason = unstable_reason({"train/loss": train, "val/loss": once(2.6)})
    assert reason.startswith("smoothed train loss ended at") and "× its lowest" in reason
    assert outcome({"status": "finished"}, train_loss=train, val_loss=once(2.6))[0] == "Unstable"
    assert unstable_reason({"train/loss": training_curve(rise=0.05, seed=seed), "val/loss": once(2.25)}) == ""


def test_a_validation_worse_than_the_runs_own_late_training_is_unstable():
    train = training_curve(noise=0.0)
    late = smoothed_train_loss(train).iloc[-1]
    assert unstable_reason({"train/loss": train, "val/loss": once(1.12 * late)}) == (
        f"final val loss {1.12 * late:.3f} > 1.1 × late train loss {late:.3f}")
    assert unstable_reason({"train/loss": train, "val/loss": once(1.09 * late)}) == ""
    assert unstable_reason({"train/loss": train, "val/loss": once(0.8 * late)}) == ""  # dropout: train above val


def test_smoothing_is_a_trailing_mean_over_a_tenth_of_the_finite_points_at_least_five():
    train = at({s: v for s, v in zip(range(10, 1010, 10), [4.0] * 50 + [2.0, 2.2] * 25)})
    curve = smoothed_train_loss(train)  # 100 points: a window of 10
    assert list(curve.index) == list(range(100, 1010, 10)) and curve.iloc[-1] == pytest.approx(2.1)
    assert unstable_reason({"train/loss": train}) == ""  # the raw 2.2 ends exactly 10 % above the raw 2.0
    few = at({s: v for s, v in zip(range(10, 210, 10), [4.0] * 10 + [2.0, 2.2] * 5)})
    assert len(smoothed_train_loss(few)) == 16  # 20 points: 10 % is 2, so the window is 5
    assert len(smoothed_train_loss(at({1: 3.0, 2: 2.5, 3: 2.0}))) == 1  # fewer than 5: one mean of all
    assert len(smoothed_train_loss(at({1: 3.0, 2: math.nan, **{s: 2.0 for s in range(3, 8)}}))) == 2  # finite only
    assert unstable_reason({"train/loss": at({1: 2.0, 2: 3.0})}) == ""  # too few values for the rise rule
    rising = at({s: v for s, v in zip(range(10, 160, 10), [3.0] + [2.0] * 9 + [2.3] * 5)})
    assert unstable_reason({"train/loss": rising}) == "smoothed train loss ended at 2.300 > 1.1 × its lowest 2.000"
    assert unstable_reason({"train/loss": rising.replace(2.3, 2.2)}) == ""  # exactly 10 % above: not more than
    one_bad_batch = at({s: v for s, v in zip(range(10, 160, 10), [3.0] + [2.0] * 13 + [2.5])})
    assert unstable_reason({"train/loss": one_bad_batch}) == ""  # 2.1 smoothed: one batch does not decide


def test_per_layer_finals_keep_each_layers_last_value_by_hand():
    scalars = {"attn/entropy_frac/layer_0": at({10: 0.9, 20: 0.8}), "attn/entropy_frac/layer_1": at({20: 0.7}),
               "attn/entropy_frac": at({20: 0.75}), "attn/entropy/layer_0": at({20: 3.0}),
               "nonfinite/skipped/layer_3": at({5: 1.0, 9: 2.0}), "nonfinite/skipped_steps": at({9: 2.0}),
               "attn/entropy_frac/layer_2": at({})}
    assert per_layer_finals(scalars) == {"entropy_frac_layer_0": 0.8, "entropy_frac_layer_1": 0.7,
                                         "skipped_layer_3": 2.0}


def test_layer_counts_by_hand():
    """Layers in numeric order (10 after 2), zeros left out, `g` formatting; all zeros read 0."""
    assert layer_counts({"skipped_layer_10": 1.0, "skipped_layer_2": 2.5, "skipped_layer_0": 0.0}) == "L2 2.5 · L10 1"
    assert layer_counts({"skipped_layer_0": 0.0, "skipped_layer_1": 0.0}) == "0"
    assert layer_counts({"skipped_layer_3": 3.0}) == "L3 3"


def test_rise_and_gap_rules_on_their_edges():
    from actsweep.study.outcomes import END_FACTOR, smoothed_train_loss, train_rise_reason, val_gap_reason

    assert smoothed_train_loss(pd.Series([3.0], index=[1])).tolist() == [3.0]  # one value: a window of one
    # six values, a window of five: a smoothed curve of two points, the last above END_FACTOR × the first
    train = pd.Series([1.0, 1.0, 1.0, 1.0, 1.0, 1.0 + 5 * (END_FACTOR - 1) * 1.5], index=range(6))
    curve = smoothed_train_loss(train)
    assert len(curve) == 2 and curve.iloc[-1] > END_FACTOR * curve.min()
    assert train_rise_reason(train) == (f"smoothed train loss ended at {curve.iloc[-1]:.3f} > {END_FACTOR} × "
                                        f"its lowest {curve.min():.3f}")
    assert train_rise_reason(train.iloc[:5]) == ""  # one smoothed point: no rise to judge
    late = curve.iloc[-1]
    assert val_gap_reason(pd.Series([END_FACTOR * late]), train) == ""  # at the factor exactly: not above it
    above = END_FACTOR * late * 1.01
    assert val_gap_reason(pd.Series([above]), train) == (f"final val loss {above:.3f} > {END_FACTOR} × "
                                                         f"late train loss {late:.3f}")


def test_an_unreadable_run_is_unreadable_whatever_its_status_says():
    log = RunLog(Path("."), {}, {"status": "finished"}, {}, unreadable="events.out.tfevents.1: truncated record")
    assert run_outcome(log) == ("Unreadable", "events.out.tfevents.1: truncated record")
