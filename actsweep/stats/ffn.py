"""FFN activation statistics and residual-stream RMS.

Training logging steps: `ffn/inactive_frac` (share of activation outputs <= 0, the blog's "Dead %"),
`ffn/act_mean`, `resid/rms/layer_{i}`. Each validation epoch: `ffn/dead_units`, the share of hidden
units never > 0 over all validation windows (Voita et al.). The arithmetic is in `actsweep.stats.metrics`;
sums are reduced across processes so that DDP equals one process on the global batch.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from actsweep.declarations import LAYER, Chart, Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import all_reduce_, per_layer, publish, reduce_sums
from actsweep.stats.metrics import activation_sums, ffn_ratios, fired_units, never_fired_share, square_sums


def ffn_summary(act_sums: torch.Tensor, sq_sums: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer inactive share, activation mean and residual RMS from (L, 3) and (L, 2) sums,
    summed over processes first (one collective) so they are global-batch statistics."""
    return ffn_ratios(*reduce_sums(act_sums, sq_sums))


def dead_unit_share(fired: torch.Tensor) -> torch.Tensor:
    """Share of units never > 0 per layer, from (L, hidden) "ever fired" masks of every process."""
    return never_fired_share(all_reduce_(fired.to(torch.int32), "max"))  # any() across processes


class FFNStats(Statistic):
    """FFN inactive share and activation mean, residual RMS, and dead units per validation epoch.

    Args:
        dead_units: collect per-unit "ever > 0" masks during validation and log `ffn/dead_units`.
        residual: log the residual-stream RMS after each block (`resid/rms/layer_{i}`).
    """

    declaration = Declaration(
        charts=(
            Chart("FFN activations", "inactive share per layer (outputs <= 0)", (rf"ffn/inactive_frac/{LAYER}",)),
            Chart("FFN activations", "dead units per layer (never > 0 in validation)", (rf"ffn/dead_units/{LAYER}",)),
            Chart("FFN activations", "activation mean per layer", (rf"ffn/act_mean/{LAYER}",)),
            Chart("residual stream and gradients", "residual RMS per layer", (rf"resid/rms/{LAYER}",)),
        ),
        columns=(
            Column("inactive_pct", "ffn/inactive_frac", "inactive %", 1, place=40, scale=100),
            Column("dead_units_pct", "ffn/dead_units", "dead units %", 1, place=50, scale=100),
            Column("act_mean", "ffn/act_mean", "act mean", 3, place=60),
        ),
        hparams=((30, "ffn/dead_units"), (70, "ffn/inactive_frac"), (80, "ffn/act_mean")),
    )

    def __init__(self, dead_units: bool = True, residual: bool = True) -> None:
        super().__init__()
        self.dead_units, self.residual = dead_units, residual
        self._acts: dict[int, torch.Tensor] = {}
        self._resid: dict[int, torch.Tensor] = {}
        self._fired: dict[int, torch.Tensor] = {}

    def register(self, model: nn.Module) -> None:
        self.hooks.register(model, "blocks.*.mlp.hook_act", self._on_act)
        if self.residual:
            self.hooks.register(model, "blocks.*.hook_resid", self._on_resid)

    def _collecting_train(self) -> bool:
        # The training forward only: a no-grad forward in between (an entropy probe run from another
        # callback's `on_train_batch_end`) must not replace this step's activations.
        return self.hooks.armed == "train" and torch.is_grad_enabled()

    def _on_act(self, act: torch.Tensor, layer: int) -> None:
        if self._collecting_train():
            self._acts[layer] = activation_sums(act)
        elif self.hooks.armed == "val":
            self._fired[layer] = fired_units(act, self._fired.get(layer))

    def _on_resid(self, x: torch.Tensor, layer: int) -> None:
        if self._collecting_train():
            self._resid[layer] = square_sums(x)

    # -- training: logging steps only ---------------------------------------------------------

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.arm_if_logging(trainer):
            self.computations += 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.hooks.armed != "train":
            return
        self.hooks.armed = None
        acts = torch.stack([self._acts[i] for i in sorted(self._acts)])
        sq = torch.stack([self._resid[i] for i in sorted(self._resid)]) if self._resid else acts.new_zeros(0, 2)
        self._acts.clear()
        self._resid.clear()
        stats = ffn_summary(acts, sq)
        metrics = {**per_layer("ffn/inactive_frac", stats["inactive_frac"]), **per_layer("ffn/act_mean", stats["act_mean"])}
        if self.residual:
            metrics.update(per_layer("resid/rms", stats["rms"], mean=False))
        publish(trainer, metrics)

    # -- validation: dead units over every window -----------------------------------------------

    def _collecting_dead_units(self, trainer: L.Trainer) -> bool:
        return self.dead_units and not trainer.sanity_checking

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._collecting_dead_units(trainer):
            self.hooks.armed = "val"

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.hooks.armed = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._collecting_dead_units(trainer):
            return
        self.computations += 1
        cfg = pl_module.model.cfg
        # A process with no validation window still joins the all-reduce (with "never fired").
        fired = torch.stack([self._fired[i] for i in sorted(self._fired)]) if self._fired else torch.zeros(
            cfg.n_layer, cfg.mlp_hidden, dtype=torch.bool, device=pl_module.device)
        self._fired.clear()
        publish(trainer, per_layer("ffn/dead_units", dead_unit_share(fired)))
