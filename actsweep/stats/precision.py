"""What fp16 mixed precision did: the GradScaler's loss scale and how many optimizer steps it skipped.

A GradScaler skips the optimizer step whenever an unscaled gradient is NaN or infinite (and halves the
scale). ReLU's Revival's LN-free fp16 runs did this silently; here every skip is counted. The test is
GradScaler's own (any non-finite gradient), made on the device each step with one infinity-norm over
the gradients, so it also holds for fused optimizers that unscale inside `step()`; the count crosses to
the host only on logging steps. Silent (no work) without a GradScaler, e.g. in fp32 or bf16.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from actsweep.declarations import Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import is_logging_step, publish
from actsweep.stats.metrics import all_finite


def gradients_finite(parameters) -> torch.Tensor:
    """Device bool: every gradient is finite."""
    return all_finite(p.grad for p in parameters if p.grad is not None)


class LossScaleMonitor(Statistic):
    """Logs `amp/loss_scale` and `amp/skipped_steps` (cumulative, kept across resumes) on logging steps
    of a run with a GradScaler (`precision: 16-mixed`)."""

    declaration = Declaration(columns=(Column("loss_scale", "amp/loss_scale", "", 0, place=210),))  # results.csv only

    def __init__(self) -> None:
        super().__init__()
        self._skipped: torch.Tensor | None = None  # device counter
        self._restored = 0

    @staticmethod
    def scaler(trainer: L.Trainer) -> torch.amp.GradScaler | None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._skipped = torch.tensor(self._restored, dtype=torch.int64, device=pl_module.device)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self.scaler(trainer) is not None and self._skipped is not None:
            self._skipped += ~gradients_finite(pl_module.parameters())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        scaler = self.scaler(trainer)
        if scaler is None or self._skipped is None or not is_logging_step(trainer):
            return
        self.computations += 1
        # get_scale() reads the scale on the host: logging steps transfer anyway.
        publish(trainer, {"amp/loss_scale": torch.tensor(scaler.get_scale()), "amp/skipped_steps": self._skipped})

    @property
    def skipped_steps(self) -> int:
        return int(self._skipped) if self._skipped is not None else self._restored

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = int(state_dict.get("skipped_steps", 0))
