"""The fit's part of a run's lifecycle (`actsweep.status`): `running` when training starts (after a
resume is restored, so the step is the one it resumed at), `finished` when the fit ends, `crashed` or
`interrupted` on an exception. `actsweep fit` always installs it, so every fit's folder says what
became of it, whatever its config's callbacks; `DivergenceGuard` records `diverged`, and a done run is
never moved back (`advance`). Rank 0 writes; `val_loss` is the latest finite validation loss."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from actsweep.status import advance

VAL_METRIC = "val/loss"


class RunStatus(Callback):
    def __init__(self) -> None:
        self.log_dir: str | None = None
        self.val_loss: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.log_dir = trainer.log_dir  # a collective under DDP: every process asks here

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_loss = None
        self.record(trainer, "running", trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(VAL_METRIC)
        if not trainer.sanity_checking and value is not None and math.isfinite(float(value)):
            self.val_loss = float(value)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record(trainer, "finished", trainer.global_step)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "crashed"
        try:
            self.record(trainer, status, trainer.global_step, f"{type(exception).__name__}: {exception}")
        except OSError as err:  # a full disk: the run's own error is the one to raise; the sweep settles it
            rank_zero_warn(f"RunStatus: could not record the run {status}: {err}")

    def record(self, trainer: L.Trainer, status: str, step: int, reason: str = "") -> None:
        if trainer.is_global_zero and self.log_dir is not None:
            advance(self.log_dir, status, step, reason, self.val_loss)
