"""Evaluation cannot hide a NaN: a real fit with NaN forced into some or all validation batches logs
`val/loss` NaN and the count of non-finite batches, stops as diverged, and the report says Diverged."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from actsweep.stats.divergence import DivergenceGuard
from actsweep.status import read_status
from actsweep.train.run_status import RunStatus
from actsweep.study.logs import read_scalars
from actsweep.study.report import RunLog, run_outcome
from actsweep.train.module import evaluation_loss
from helpers import tiny_modules, tiny_trainer

VAL_BATCHES = 4  # 16 validation windows in batches of 4


class PoisonValidation(Callback):
    """Turns the model's logits to NaN on the validation batches numbered in `bad`."""

    def __init__(self, bad: set[int]) -> None:
        self.bad, self.poison = bad, False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.model.register_forward_hook(lambda _m, _i, out: out * math.nan if self.poison else None)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.poison = batch_idx in self.bad

    def on_validation_end(self, trainer, pl_module) -> None:
        self.poison = False


def fit_with_poisoned_validation(folder, bad: set[int]) -> tuple[RunLog, L.Trainer]:
    """A real fit validating at steps 5 and 10, read back as the report reads a run."""
    L.seed_everything(7)
    module, data = tiny_modules(folder)
    data.val_batch_size = 16 // VAL_BATCHES
    trainer = tiny_trainer(folder, [PoisonValidation(bad), DivergenceGuard(), RunStatus()], logger=TensorBoardLogger(folder),
                           limit_val_batches=None, val_check_interval=5, max_steps=10)
    trainer.fit(module, data)
    run = Path(trainer.log_dir)
    return RunLog(run, {}, read_status(run), read_scalars(run)), trainer


def test_finite_validation_is_the_token_mean_of_every_window(tmp_path):
    run, trainer = fit_with_poisoned_validation(tmp_path, bad=set())
    module, data = trainer.lightning_module, trainer.datamodule
    module.eval()  # no dropout, as in validation
    with torch.no_grad():  # an independent computation: every validation token's loss, in float64
        losses = torch.cat([module.loss(b, reduction="none").double() for b in data.val_batches()])
    val = run.scalars["val/loss"]
    assert len(val) == 2 and val.iloc[-1] == pytest.approx(losses.mean().item(), rel=1e-6)
    assert list(run.scalars["val/nonfinite_batches"]) == [0, 0]
    assert run.status["status"] == "finished" and run.status["val_loss"] == pytest.approx(val.iloc[-1])
    assert run_outcome(run)[0] in ("Stable", "Unstable")


@pytest.mark.parametrize("bad", [{1}, set(range(VAL_BATCHES))], ids=["one_of_four", "all"])
def test_non_finite_validation_batches_make_the_run_diverged(tmp_path, bad):
    run, trainer = fit_with_poisoned_validation(tmp_path, bad)
    val = run.scalars["val/loss"]
    assert len(val) == 1 and math.isnan(val.iloc[0]) and math.isnan(run.scalars["val/ppl"].iloc[0])
    assert run.scalars["val/nonfinite_batches"].iloc[0] == len(bad)
    assert trainer.global_step == 5  # stopped at the first validation
    status = run.status
    assert status["status"] == "diverged" and status["step"] == val.index[0] and "val/loss" in status["reason"]
    assert status["val_loss"] is None  # no finite validation ever happened
    assert run_outcome(run)[0] == "Diverged"


def test_evaluation_loss_is_nan_when_any_batch_was_not_finite():
    sums = torch.tensor(12.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    assert evaluation_loss(*sums, torch.tensor(0.0)).item() == 3.0
    assert math.isnan(evaluation_loss(*sums, torch.tensor(1.0)).item())
    assert math.isnan(evaluation_loss(torch.tensor(math.inf), sums[1], torch.tensor(1.0)).item())


def test_report_counts_a_non_finite_validation_as_diverged_even_when_later_ones_are_finite(tmp_path):
    scalars = {"val/loss": pd.Series({5: math.nan, 10: 3.0}), "train/loss": pd.Series({10: 3.1})}
    log = RunLog(tmp_path, {}, {"status": "finished"}, scalars)
    assert run_outcome(log)[0] == "Diverged"
    assert run_outcome(RunLog(tmp_path, {}, {"status": "finished"}, {"val/loss": pd.Series({10: 3.0})}))[0] == "Stable"


def test_fresh_validation_windows_change_with_the_step_and_not_with_the_process(tmp_path):
    from actsweep.data.module import TextDataModule
    from helpers import DATA, write_corpus

    data = TextDataModule(**{**DATA, "source": str(write_corpus(tmp_path)), "cache_dir": str(tmp_path / "c"),
                             "val_windows": 10, "val_batch_size": 4, "val_sampling": "fresh"})
    data.prepare_data()
    data.setup("fit")
    starts = data.fresh_val_starts(100)
    assert len(starts) == 10 and starts.max() <= len(data._tokens("val")) - DATA["block_size"] - 1
    assert starts.tolist() != data.fresh_val_starts(200).tolist()
    batches = data.val_batches(starts=starts)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    tokens = data._tokens("val")
    assert batches[0][1][0].tolist() == tokens[starts[0] + 1:starts[0] + DATA["block_size"] + 1].tolist()
    loader = data.val_dataloader()
    assert len(loader) == 3 and sum(len(x) for x, _ in loader) == 10


@pytest.mark.parametrize("options, message", [
    ({"val_sampling": "random"}, "unknown val_sampling 'random'; choose one of fixed, fresh"),
    ({"val_sampling": "fresh", "val_windows": None}, "val_sampling fresh draws val_windows windows"),
])
def test_bad_val_sampling_is_refused(options, message):
    from actsweep.data.module import TextDataModule
    from actsweep.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TextDataModule(tokenizer="char", **options)
