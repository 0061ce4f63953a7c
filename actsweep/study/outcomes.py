"""The report's rules, as pure functions of a run's status record and logged scalars: which runs are
Stable, Unstable, Diverged or unfinished, a configuration's status over its seeds, the final slope,
and the fp16 skipped-step flag. `UNSTABLE_RULE` states them in words under every report's table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from actsweep.study.logs import RunLog

COMPLETED = ("Stable", "Unstable")  # the outcomes of runs that finished: the ones a result is computed from

MAX_SKIPPED_SHARE = 0.05  # fp16 runs whose GradScaler skipped more of the optimizer steps are flagged
SPIKE_AFTER, SPIKE_FACTOR, END_FACTOR = 0.10, 1.5, 1.10
# The training-loss rules read a trailing mean over this share of the run's logged train losses: one
# batch's loss is noisy (±5 % on the quickstart model), and a single unlucky batch is not a run that
# lost ground. They are what works when a run validates once (every study run): the val-vs-best rule
# then compares the one validation with itself.
SMOOTH_SHARE, SMOOTH_MIN = 0.10, 5  # ... and over at least 5 values: a run logging few is not judged by one batch
UNSTABLE_RULE = (
    f"A run is **Unstable** when its final val loss exceeds its best val loss by more than "
    f"{END_FACTOR - 1:.0%}, or when, after the first {SPIKE_AFTER:.0%} of its steps, a logged train loss "
    f"exceeds {SPIKE_FACTOR}× the lowest train loss logged before it (a spike), or when its training loss "
    f"(a trailing mean over {SMOOTH_SHARE:.0%} of its logged values, at least {SMOOTH_MIN}) ends more than {END_FACTOR - 1:.0%} above "
    f"its lowest, or when its final val loss exceeds that smoothed final train loss by more than "
    f"{END_FACTOR - 1:.0%} (validation worse than the run's own late training: lost ground, or overfitting). "
    "A run is **Diverged** when "
    "its training loss or any validation loss became non-finite (the run stops there and is not retried; "
    "under DivergenceGuard's `nonfinite: skip` a step with non-finite gradients is skipped, counted per "
    "layer in the `skips by layer` column, and the run goes on). "
    "A configuration is Diverged if "
    "any seed diverged, else Incomplete if any seed did not finish, else Unstable if any seed is unstable, "
    "else Stable. Val loss and ppl: mean over the seeds that finished (Stable or Unstable) with its two-sided "
    "95 % Student-t interval, n = their number; other columns: mean over the same seeds of the last logged value."
)


def smoothed_train_loss(train: pd.Series, share: float = SMOOTH_SHARE) -> pd.Series:
    """The finite train losses as a trailing mean over ⌈share · their number⌉ values, but at least
    SMOOTH_MIN (all of them when fewer), full windows only."""
    finite = train[np.isfinite(train.to_numpy(dtype=float))].sort_index()
    window = max(1, min(len(finite), max(SMOOTH_MIN, math.ceil(share * len(finite)))))
    return finite.rolling(window).mean().dropna()


def train_rise_reason(train: pd.Series) -> str:
    """Why the smoothed training loss ended more than END_FACTOR above its lowest; empty when not."""
    curve = smoothed_train_loss(train)
    if len(curve) >= 2 and curve.iloc[-1] > END_FACTOR * curve.min():
        return f"smoothed train loss ended at {curve.iloc[-1]:.3f} > {END_FACTOR} × its lowest {curve.min():.3f}"
    return ""


def val_gap_reason(val: pd.Series, train: pd.Series) -> str:
    """Why the final validation is more than END_FACTOR above the smoothed final train loss; empty when not."""
    curve = smoothed_train_loss(train)
    if len(val) and len(curve) and val.iloc[-1] > END_FACTOR * curve.iloc[-1]:
        return f"final val loss {val.iloc[-1]:.3f} > {END_FACTOR} × late train loss {curve.iloc[-1]:.3f}"
    return ""


def final_slope(scalars: dict[str, pd.Series]) -> float:
    """`slope/global`, else the mean over layers of the last per-layer (or per-neuron mean) slope."""
    if "slope/global" in scalars:
        return float(scalars["slope/global"].iloc[-1])
    layers = [s.iloc[-1] for tag, s in scalars.items()
              if tag.startswith("slope/layer_") and (tag.count("/") == 1 or tag.endswith("/mean"))]
    return float(np.mean(layers)) if layers else math.nan


def final_saturation(scalars: dict[str, pd.Series]) -> float:
    """Mean over dyt/derf/dyisru norms of the last logged saturated share of their inputs
    (`norm/saturated/{site}/layer_{i}`, from NormStats); NaN for runs without such norms."""
    last = [s.iloc[-1] for tag, s in scalars.items() if tag.startswith("norm/saturated/") and len(s)]
    return float(np.mean(last)) if last else math.nan


def unstable_reason(scalars: dict[str, pd.Series]) -> str:
    """Why a run counts as Unstable under `UNSTABLE_RULE`; empty when it does not."""
    val = scalars.get("val/loss")
    if val is not None and len(val) and val.iloc[-1] > END_FACTOR * val.min():
        return f"final val loss {val.iloc[-1]:.3f} > {END_FACTOR} × best {val.min():.3f}"
    train = scalars.get("train/loss")
    if train is not None and len(train) > 1:
        before = train.cummin().shift(1)
        late = train.index >= SPIKE_AFTER * train.index.max()
        spikes = train[late & (train > SPIKE_FACTOR * before).to_numpy()]
        if len(spikes):
            return f"train loss spike to {spikes.iloc[0]:.3f} at step {spikes.index[0]}"
    if train is not None:
        return train_rise_reason(train) or (val_gap_reason(val, train) if val is not None else "")
    return ""


FORWARD_SITES = ("q", "k", "act", "resid")  # the order a value passes through a block


def nonfinite_origin(scalars: dict[str, pd.Series]) -> str:
    """Where a run first went non-finite, from `nonfinite/<site>/layer_i`: at the first step with any
    count, the lowest layer and earliest site of the forward pass (`layer 2 (resid) at step 140`); if
    the forward was finite there, the backward pass's first block, the highest with a non-finite
    gradient. "" when nothing was ever non-finite."""
    counts = {tag: s for tag, s in scalars.items() if tag.startswith("nonfinite/") and (s > 0).any()}
    if not counts:
        return ""
    step = min(int(s.index[s > 0][0]) for s in counts.values())
    hits = [(tag.split("/")[1], int(tag.rsplit("_", 1)[1])) for tag, s in counts.items() if s.get(step, 0) > 0]
    forward = [(layer, FORWARD_SITES.index(site), site) for site, layer in hits if site in FORWARD_SITES]
    if forward:
        layer, _, site = min(forward)
    else:
        layer, site = max(layer for _, layer in hits), "grad"
    return f"first non-finite: layer {layer} ({site}) at step {step}"


def run_outcome(log: RunLog) -> tuple[str, str]:
    """(Stable | Unstable | Diverged | Crashed | Interrupted | Running | Unknown | Unreadable, reason)."""
    if log.unreadable:  # whatever status.json says, there is no result to report
        return "Unreadable", log.unreadable
    status, reason = log.status.get("status", "unknown"), log.status.get("reason", "")
    # Any non-finite validation (even one followed by finite ones) or a non-finite last train loss.
    losses = [*log.scalars.get("val/loss", []), *log.scalars.get("train/loss", [])[-1:]]
    if status == "diverged" or not all(map(math.isfinite, losses)):
        return "Diverged", "; ".join(filter(None, [reason or "non-finite loss", nonfinite_origin(log.scalars)]))
    if status != "finished":
        return status.capitalize(), reason
    why = unstable_reason(log.scalars)
    return ("Unstable", why) if why else ("Stable", "")


def skipped_share(scalars: dict[str, pd.Series]) -> float:
    """Share of optimizer steps the fp16 GradScaler skipped: the last cumulative `amp/skipped_steps`
    over the steps up to it (the step axis starts at 0); NaN for a run without a GradScaler."""
    skipped = scalars.get("amp/skipped_steps")
    if skipped is None or not len(skipped):
        return math.nan
    return float(skipped.iloc[-1]) / (int(skipped.index[-1]) + 1)


# Per-layer statistics the results table keeps, one column per layer: column prefix -> logged tag.
# `skipped_layer_i`: optimizer steps skipped for non-finite gradients in block i (DivergenceGuard's
# `nonfinite: skip`, cumulative, logged at each skip: ReLU's Revival's NaN counts per layer; none for a
# run that never skipped). `entropy_frac_layer_i`: layer i's mean head entropy over ln(T!)/T at the
# last probe (the paper's entropic overload, per layer, as a number a paired comparison can take).
PER_LAYER = {"skipped_layer": "nonfinite/skipped", "entropy_frac_layer": "attn/entropy_frac"}


def per_layer_finals(scalars: dict[str, pd.Series]) -> dict[str, float]:
    """The last logged value of each `PER_LAYER` tag's layers, as `{column prefix}_{i}` columns."""
    finals = {}
    for column, tag in PER_LAYER.items():
        prefix = f"{tag}/layer_"
        finals.update({f"{column}_{name[len(prefix):]}": float(s.iloc[-1]) for name, s in scalars.items()
                       if name.startswith(prefix) and len(s)})
    return finals


def layer_counts(means: dict[str, float]) -> str:
    """`L0 3 · L2 1.5`: per-layer counts (`skipped_layer_i` means over seeds), in layer order, zeros left out;
    `0` when every layer is zero."""
    layers = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in means.items())
    shown = [f"L{layer} {value:g}" for layer, value in layers if value]
    return " · ".join(shown) or "0"


def precision_flag(share: float, max_share: float = MAX_SKIPPED_SHARE) -> str:
    """Why a run's mixed precision needs a look (empty when it does not): skipped steps above `max_share`."""
    if math.isfinite(share) and share > max_share:
        return f"fp16 skipped {share:.1%} of optimizer steps (more than {max_share:.0%})"
    return ""


def config_status(outcomes: pd.Series) -> str:
    """A configuration's status from its seeds' outcomes, as `UNSTABLE_RULE` says."""
    n = len(outcomes)
    for name, hit in (("Diverged", outcomes == "Diverged"), ("Incomplete", ~outcomes.isin(["Stable", "Unstable"])),
                      ("Unstable", outcomes == "Unstable")):
        if hit.any():
            return f"{name} ({hit.sum()}/{n})"
    return "Stable"
