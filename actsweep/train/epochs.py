"""`EpochBudget`: stop after a whole number of passes over the training windows, as the HF Trainer's
`num_train_epochs` did for ReLU's Revival (one epoch, train.yaml:4), instead of a rounded max_steps.

Set in the callback's `setup`, after the data module has its windows and before the optimizer and
its schedule are built (the schedule spans the budget), so a resumed run computes the same budget.
With `trainer.max_steps` also set, the run stops at whichever comes first.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from actsweep.errors import ConfigError


def epoch_steps(windows: int, global_batch: int, accumulate: int, epochs: float) -> int:
    """Optimizer steps in `epochs` passes over `windows` training windows: each pass is
    `windows // global_batch` micro-batches (the `sampling: epoch` grid drops the remainder of each
    permutation), each optimizer step takes `accumulate` of them. The HF Trainer also trains on its
    last partial batch: at most one optimizer step more per epoch."""
    return int(epochs * (windows // global_batch)) // accumulate


class EpochBudget(Callback):
    """Sets `trainer.fit_loop.max_steps` to `epochs` passes over the training windows.

    Args:
        epochs: passes over the training windows (a fraction is allowed).
    """

    def __init__(self, epochs: float = 1.0) -> None:
        if not epochs > 0:
            raise ConfigError(f"EpochBudget epochs must be positive, got {epochs}")
        self.epochs = epochs
        self.steps: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        data = trainer.datamodule
        global_batch = data.batch_size * trainer.world_size
        self.steps = epoch_steps(data.train_windows(), global_batch, trainer.accumulate_grad_batches, self.epochs)
        if self.steps < 1:
            raise ConfigError(f"{self.epochs} epoch(s) of {data.train_windows()} training windows is less than one "
                              f"optimizer step of {global_batch} × {trainer.accumulate_grad_batches} windows")
        cap = trainer.max_steps
        # FitLoop.max_steps has no setter; its epoch loop holds the value (Lightning's batch-size
        # finder sets it the same way); `trainer.max_steps` reads it back, so the schedule spans it.
        trainer.fit_loop.epoch_loop.max_steps = self.steps if cap < 0 else min(cap, self.steps)
