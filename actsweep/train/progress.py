"""A progress bar that shows the training loss without a host sync on every step.

`self.log(..., prog_bar=True)` in `training_step` makes Lightning turn the value into a Python float
after *every* batch (`_LoggerConnector.on_batch_end`), which waits for the device each step. The
module therefore logs `train/loss` without `prog_bar`, and this bar reads it from
`trainer.callback_metrics` (still a device tensor) only when it refreshes: with `refresh_rate` a
multiple of `log_every_n_steps`, only on steps that sync anyway.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class LossProgressBar(TQDMProgressBar):
    """`TQDMProgressBar` that also shows the latest `train/loss` (read on refresh only)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and trainer.training:
            metrics["train/loss"] = round(float(loss), 3)
        return metrics
