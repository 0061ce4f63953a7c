"""Statistics drive Lightning (they reach `callback_metrics`, so EarlyStopping and ModelCheckpoint can
monitor them), and the few Lightning internals the callbacks still read behave as they rely on."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from actsweep.stats import FFNStats, GradNorms
from actsweep.stats.common import is_accumulating, is_logging_step, logger_step
from actsweep.stats.divergence import checkpoint_due
from actsweep.stats.throughput import compute_dtype
from actsweep.train.checkpoints import validation_follows
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


# -- the Lightning internals that stay (no public API): fail loudly when upstream changes them --------


class Hooks(Callback):
    """What `is_logging_step`, `is_accumulating`, `logger_step` and `checkpoint_due` say in each hook."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, bool, bool, int]] = []
        self.due: list[int] = []

    def _see(self, hook: str, trainer: L.Trainer) -> None:
        self.seen.append((hook, trainer.global_step, is_logging_step(trainer), is_accumulating(trainer),
                          logger_step(trainer)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._see("start", trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._see("before_step", trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._see("end", trainer)
        if checkpoint_due(trainer):
            self.due.append(trainer.global_step)


def test_private_lightning_state_means_what_the_callbacks_rely_on(tmp_path):
    """2 micro-batches per step, logging every 3 steps, a checkpoint every 2: is_logging_step is true
    exactly where Lightning writes `train/loss` (and only on the step's last micro-batch), logger_step is
    that x-axis value in every hook, statistics land there, and checkpoint_due where checkpoints appear."""
    module, data = tiny_modules(tmp_path, dropout=0.0)
    hooks, logger = Hooks(), ScalarLogger()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = tiny_trainer(tmp_path, [hooks, GradNorms(), checkpoints], logger=logger, max_steps=6,
                           accumulate_grad_batches=2, log_every_n_steps=3, enable_checkpointing=True)
    trainer.fit(module, data)
    logged = [step for step, _ in logger.scalars["train/loss"]]
    assert logged == [2, 5]
    assert [step for step, _ in logger.scalars["grad/norm"]] == logged
    starts = [s for s in hooks.seen if s[0] == "start"]
    assert [s[3] for s in starts] == [True, False] * 6  # accumulating on each step's first micro-batch
    assert [s[4] for s in starts] == [step for step in range(6) for _ in (0, 1)]  # logger_step = step index
    assert {s[4] for s in hooks.seen if s[2]} == set(logged)
    assert all(not s[3] for s in hooks.seen if s[2])  # a logging step is never a leading micro-batch
    saved = sorted(int(p.stem.split("=")[1]) for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == [2, 4, 6] and set(saved) <= set(hooks.due)  # due wherever ModelCheckpoint saved
    assert all(step % 2 == 0 for step in hooks.due)  # and only where its trigger could fire



class Validations(Callback):
    """The steps at which `validation_follows` says so, and the steps Lightning validated at."""

    def __init__(self) -> None:
        self.follows: list[int] = []
        self.validated: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if validation_follows(trainer):
            self.follows.append(trainer.global_step)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validated.append(trainer.global_step)


@pytest.mark.parametrize("interval, accumulate, expected", [(3, 1, [3, 6, 7]), (4, 2, [2, 4, 6, 7])])
def test_validation_follows_exactly_where_lightning_validates(tmp_path, interval, accumulate, expected):
    """Every `interval` batches (micro-batches under accumulation) and once more at the run's end."""
    module, data = tiny_modules(tmp_path, dropout=0.0)
    seen = Validations()
    trainer = tiny_trainer(tmp_path, [seen], max_steps=7, limit_val_batches=1, val_check_interval=interval,
                           check_val_every_n_epoch=None, accumulate_grad_batches=accumulate)
    trainer.fit(module, data)
    assert seen.validated == expected and seen.follows == expected


@pytest.mark.parametrize("precision, dtype", [
    ("32-true", torch.float32), ("16-mixed", torch.float16), ("bf16-mixed", torch.bfloat16),
    ("16-true", torch.float16), ("bf16-true", torch.bfloat16), ("64-true", torch.float64),
    ("transformer-engine", torch.int8),
])
def test_compute_dtype_of_each_precision_flag(precision, dtype):
    assert compute_dtype(precision) == dtype
