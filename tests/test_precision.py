"""fp16 mixed precision shows what it did: a real fp16 fit (GradScaler on CPU) with infinite gradients
forced on known steps logs those skips and the halved loss scale, and the report flags the run."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision

from actsweep.stats import LossScaleMonitor
from actsweep.study.logs import read_scalars
from actsweep.study.report import RunLog, precision_flag, runs_table, skipped_share
from helpers import tiny_modules, tiny_trainer

BAD_STEPS = {2, 5, 6}  # 3 of 10 steps


class InfiniteGradient(Callback):
    """Puts an infinite value into one gradient after the backward pass of the steps in `steps`, and
    keeps a copy of the weights before every step."""

    def __init__(self, steps: set[int]) -> None:
        self.steps, self.before = steps, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.before[trainer.global_step] = pl_module.model.lm_head.weight.detach().clone()

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step in self.steps:
            pl_module.model.lm_head.weight.grad[0, 0] = math.inf


def test_fp16_fit_counts_skipped_steps_and_logs_the_loss_scale(tmp_path):
    L.seed_everything(7)
    module, data = tiny_modules(tmp_path, dropout=0.0)
    poison, monitor = InfiniteGradient(BAD_STEPS), LossScaleMonitor()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    trainer = tiny_trainer(tmp_path, [poison, monitor], plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
                           logger=TensorBoardLogger(tmp_path), max_steps=10)
    trainer.fit(module, data)
    scalars = read_scalars(trainer.log_dir)
    expected = [sum(s <= step for s in BAD_STEPS) for step in range(10)]  # cumulative, by hand
    assert list(scalars["amp/skipped_steps"]) == expected
    assert list(scalars["amp/loss_scale"]) == [2.0**16 * 0.5**k for k in expected]  # halved at each skip
    assert monitor.skipped_steps == len(BAD_STEPS) and monitor.state_dict() == {"skipped_steps": 3}
    weights = [*poison.before.values(), module.model.lm_head.weight.detach()]
    for step in range(10):  # a skipped step left the weights as they were; the others moved them
        assert torch.equal(weights[step], weights[step + 1]) == (step in BAD_STEPS)
    log = RunLog(Path(trainer.log_dir), {"name": "fp16", "config": "fp16", "overrides": {}, "seed": 0},
                 {"status": "finished"}, scalars)
    (row,) = runs_table([log], max_skipped_share=0.2).to_dict("records")
    assert row["skipped_pct"] == pytest.approx(30.0) and row["loss_scale"] == 2.0**13
    assert "30.0%" in row["flag"]
    assert runs_table([log], max_skipped_share=0.5).flag.tolist() == [""]


def test_monitor_is_silent_without_a_grad_scaler(tmp_path):
    module, data = tiny_modules(tmp_path)
    trainer = tiny_trainer(tmp_path, [monitor := LossScaleMonitor()], max_steps=2)
    trainer.fit(module, data)
    assert monitor.computations == 0


def test_skipped_share_and_flag():
    assert skipped_share({"amp/skipped_steps": pd.Series({0: 0.0, 99: 10.0})}) == 0.1
    assert math.isnan(skipped_share({}))
    assert precision_flag(0.1, 0.05) and not precision_flag(0.05, 0.05) and not precision_flag(math.nan)


@pytest.mark.parametrize("backend", ["adaptive", "auto", "math", "flash", "efficient", "cudnn"])
def test_float64_trains_with_every_attention_backend(tmp_path, backend):
    """`--trainer.precision 64-true` trains two steps whatever `sdpa_backend` says: the logit bound
    keeps float64, and float64 attention takes the math kernel (no fused kernel has float64)."""
    from actsweep import cli
    from actsweep.status import read_status
    from helpers import write_config

    config = write_config(tmp_path, trainer={"max_steps": 2, "val_check_interval": 2})
    cli.main(["fit", "--config", str(config), "--trainer.precision", "64-true", "--model.sdpa_backend", backend])
    run = tmp_path / "logs" / "tiny" / "version_0"
    status = read_status(run)
    assert status["status"] == "finished" and status["step"] == 2 and math.isfinite(status["val_loss"])
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float64}
