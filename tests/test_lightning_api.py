"""Statistics drive Lightning (they reach `callback_metrics`, so EarlyStopping and ModelCheckpoint can
monitor them), and the few Lightning internals the callbacks still read behave as they rely on."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from actsweep.stats import FFNStats, GradNorms
from helpers import ScalarLogger, tiny_modules, tiny_trainer


class KeepGradNorm(Callback):
    """The total gradient norm of every step, computed here independently of `GradNorms`."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.flatten() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.cat(grads)).item())


def test_early_stopping_on_a_statistic(tmp_path):
    """EarlyStopping watches `grad/norm` (before: "metric not available"): any norm is under its
    threshold, so it stops at the first validation, having seen exactly the value logged last."""
    L.seed_everything(7)
    module, data = tiny_modules(tmp_path, dropout=0.0)
    logger, norms = ScalarLogger(), KeepGradNorm()
    stop = EarlyStopping(monitor="grad/norm", mode="min", stopping_threshold=1e9, check_on_train_epoch_end=False)
    trainer = tiny_trainer(tmp_path, [norms, GradNorms(), FFNStats(), stop], logger=logger, max_steps=20,
                           limit_val_batches=None, val_check_interval=4, log_every_n_steps=2)
    trainer.fit(module, data)
    assert trainer.global_step == 4 and stop.stopped_epoch == 0 and trainer.should_stop
    # the statistic EarlyStopping saw is the one logged at the last logging step (step 4 = norms[3])
    assert trainer.callback_metrics["grad/norm"].item() == pytest.approx(norms.norms[3], rel=1e-5)
    assert logger.scalars["grad/norm"] == [(1, pytest.approx(norms.norms[1], rel=1e-5)),
                                           (3, pytest.approx(norms.norms[3], rel=1e-5))]
    assert "ffn/dead_units" in trainer.callback_metrics  # a validation-time statistic too
