"""Attention entropy per layer and head on a fixed probe batch (ReLU's Revival's "entropic overload").

Computed in the shared probe pass (`actsweep.stats.probe`: one eval forward on the probe batch, one
layer's (B, H, T, T) scores at a time, shared with `AttentionSink`). Entropy of a query row with scores
s is logsumexp(s) - sum softmax(s) * s in nats (masked entries contribute 0; no `p + eps`).

The arithmetic (`head_entropy`, `entropy_bands`, `causal_uniform_entropy`) is in `actsweep.stats.metrics`;
`probe_entropy` and `heatmap_figure` here are plain and importable from a notebook too.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from actsweep.board import BAND_REFERENCES, HEATMAP_TAG, band_tag, head_entropy_tag
from actsweep.declarations import LAYER, Chart, Column, Declaration
from actsweep.stats.common import is_accumulating, logger_step, per_layer, publish, tensorboard
from actsweep.stats.metrics import causal_uniform_entropy, entropy_bands, max_logit, scores_entropy
from actsweep.stats.probe import ProbeStatistic, ScoresProbe


def head_entropies(s: torch.Tensor) -> torch.Tensor:
    """(H,) head entropies of one layer's causal scores (B, H, T, T), averaged over windows and queries."""
    return scores_entropy(s).mean(0)


def probe_entropy(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """(n_layer, n_head) head entropies of `model` on token ids `idx` (B, T), for notebooks."""
    probe = ScoresProbe(model)
    try:
        probe.subscribe(probe_entropy, {"entropy": head_entropies})
        return probe.run(model, idx)["entropy"]
    finally:
        probe.remove()


def entropy_metrics(ent: torch.Tensor, T: int) -> dict[str, torch.Tensor]:
    """Scalar tags of an (L, H) entropy matrix: means, every head, and both band definitions."""
    metrics = per_layer("attn/entropy", ent.mean(1))
    # ReLU's Revival's "entropic overload" as a continuous quantity: each layer's mean head entropy as a
    # share of a uniform causal head's (band shares saturate at 86-100 % in every LN-free arm)
    metrics.update(per_layer("attn/entropy_frac", ent.mean(1) / causal_uniform_entropy(T)))
    metrics.update({head_entropy_tag(i, j): ent[i, j] for i in range(ent.shape[0]) for j in range(ent.shape[1])})
    tops = {"max": ent.max(), "uniform": causal_uniform_entropy(T)}
    for reference in BAND_REFERENCES:
        metrics.update({band_tag(reference, b): share for b, share in enumerate(entropy_bands(ent, tops[reference]))})
    return metrics


def heatmap_figure(ent: torch.Tensor, T: int, step: int):
    """A matplotlib figure of an (L, H) entropy matrix: layers down, heads across, each cell labelled
    with its value, on the fixed scale [0, ln(T!)/T] nats (the causal-uniform ceiling, marked on the
    colour bar) so that colours compare across runs and steps."""
    from matplotlib.figure import Figure

    ceiling = causal_uniform_entropy(T)
    grid = ent.float().cpu().numpy()
    n_layer, n_head = grid.shape
    fig = Figure(figsize=(2.4 + 0.55 * max(n_head, 4), 1.6 + 0.45 * max(n_layer, 2)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, vmin=0.0, vmax=ceiling, cmap="viridis", aspect="auto")
    ax.set(xlabel="head", ylabel="layer", xticks=range(n_head), yticks=range(n_layer))
    ax.set_title(f"attention entropy per head, step {step}\nred: ln(T!)/T, a uniform causal head (T = {T})", fontsize=9)
    if grid.size <= 144:  # values stay legible up to 12 × 12
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 * ceiling else "white")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("entropy (nats)", fontsize=8)
    bar.ax.axhline(ceiling, color="red", linewidth=3)
    ticks = [t for t in bar.get_ticks() if t < 0.9 * ceiling]
    bar.set_ticks([*ticks, ceiling], labels=[*(f"{t:g}" for t in ticks), f"{ceiling:.2f}"])
    bar.ax.get_yticklabels()[-1].set_color("red")
    return fig


class AttentionEntropy(ProbeStatistic):
    """Head entropies on `trainer.datamodule.probe_batch()` at each validation epoch end and,
    optionally, every `every_n_train_steps` optimizer steps.

    Under DDP the probe runs identically on every process (same weights, same batch: no collective,
    and FSDP's forward needs every rank anyway); rank 0 logs.

    Args:
        every_n_train_steps: also probe during training at this interval (0: validation only).
        probe_windows: windows asked of `probe_batch(n)` (None: the data module's default).
    """

    declaration = Declaration(
        charts=(
            Chart("attention entropy", "entropy per layer (nats; mean over heads)", (rf"attn/entropy/{LAYER}",)),
            Chart("attention entropy", "entropy per layer as a share of ln(T!)/T", (rf"attn/entropy_frac/{LAYER}",)),
            Chart("attention entropy", "heads in each quarter of [0, largest head entropy]", (r"attn/heads_in_band/max_.*",)),
            Chart("attention entropy", "heads in each quarter of [0, ln(T!)/T]", (r"attn/heads_in_band/uniform_.*",)),
            Chart("attention entropy", "largest |attention logit| per layer", (rf"attn/max_logit/{LAYER}",)),
        ),
        columns=(
            Column("top_band_max_pct", band_tag("max", 3), "top-band heads % (max)", 0, place=80, scale=100),
            Column("top_band_uniform_pct", band_tag("uniform", 3), "top-band heads % (ln(T!)/T)", 0, place=90, scale=100),
        ),
        hparams=((40, "attn/entropy"), (50, band_tag("uniform", 3)), (100, band_tag("max", 3))),
    )

    reducers = {"entropy": head_entropies, "max_logit": max_logit}

    def __init__(self, every_n_train_steps: int = 0, probe_windows: int | None = None) -> None:
        super().__init__(probe_windows)
        self.every_n_train_steps = every_n_train_steps

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n > 0 and trainer.global_step % n == 0 and not is_accumulating(trainer):
            self._run(trainer, pl_module)

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        found = self.probe(trainer, pl_module)
        if found is None:
            return
        values, T = found
        n_layer, n_head = values["entropy"].shape
        both = torch.cat([values["entropy"].flatten(), values["max_logit"]]).cpu()  # the one transfer
        ent, peaks = both[: n_layer * n_head].view(n_layer, n_head), both[n_layer * n_head:]
        publish(trainer, {**entropy_metrics(ent, T), **per_layer("attn/max_logit", peaks, mean=False)})
        writer = tensorboard(trainer)
        if writer is not None:
            step = logger_step(trainer)
            writer.add_figure(HEATMAP_TAG, heatmap_figure(ent, T, step), step)
            finite = ent[ent.isfinite()]
            if finite.numel():  # a histogram of NaNs cannot be drawn; the scalars say NaN
                writer.add_histogram("attn/head_entropy", finite, step)
