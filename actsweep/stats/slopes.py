"""Learnable leaky-ReLU slopes over time (ReLU's Revival: they converge to ~0).

Tags: `slope/global` (one slope for the whole model), `slope/layer_{i}` (one per layer), and for one
slope per hidden unit `slope/layer_{i}/mean` and `slope/layer_{i}/std` (population spread).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from actsweep.declarations import LAYER, Chart, Declaration
from actsweep.model.activations import is_slope
from actsweep.stats.base import Statistic
from actsweep.stats.common import is_logging_step, layer_index, publish
from actsweep.stats.metrics import slope_spread


def slope_metrics(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tag -> device scalar for every learnable slope of `model`; empty for a model without any."""
    metrics: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():  # a shared global slope is listed once, as slopes.shared
        if not is_slope(name):
            continue
        value = p.detach()
        if not name.startswith("blocks."):
            metrics["slope/global"] = value
        elif value.numel() == 1:
            metrics[f"slope/layer_{layer_index(name)}"] = value
        else:
            mean, std = slope_spread(value)
            metrics.update({f"slope/layer_{layer_index(name)}/mean": mean, f"slope/layer_{layer_index(name)}/std": std})
    return metrics


class SlopeMonitor(Statistic):
    """Logs every learnable slope, after the optimizer step, on logging steps; silent without slopes.

    The report's `slope` column (with its interval over seeds) is computed in `study/outcomes.py`."""

    declaration = Declaration(
        charts=(Chart("learnable slopes", "slope per layer (mean over units)",
                      (r"slope/global", rf"slope/{LAYER}", rf"slope/{LAYER}/mean")),),
        hparams=((110, "slope/global"),),
    )

    def __init__(self) -> None:
        super().__init__()
        self._has_slopes = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._has_slopes = any(is_slope(name) for name, _ in pl_module.model.named_parameters())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._has_slopes and is_logging_step(trainer):
            self.computations += 1
            publish(trainer, slope_metrics(pl_module.model))
