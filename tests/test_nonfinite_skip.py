"""`DivergenceGuard(nonfinite="skip")`: a step with a non-finite gradient is skipped (no update, no
optimizer state change), counted per layer, and training goes on, as the HF Trainer under a
GradScaler; `stop` (the default) ends the run at it."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from actsweep.errors import ConfigError
from actsweep.stats import DivergenceGuard
from actsweep.study.logs import RunLog
from actsweep.study.outcomes import layer_counts
from actsweep.study.report import markdown_table, runs_table, skips_of, summarize
from helpers import ScalarLogger, tiny_modules, tiny_trainer

BAD_STEPS = {2, 5, 6}


class BreakLayerOne(Callback):
    """A NaN in one gradient of block 1 on BAD_STEPS (after the backward); keeps the weights before every step."""

    def __init__(self) -> None:
        self.before: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = torch.cat([p.detach().flatten() for p in pl_module.parameters()]).clone()

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step in BAD_STEPS:
            pl_module.model.blocks[1].mlp.fc.weight.grad[0, 0] = math.nan


def fit(tmp_path, policy: str):
    module, data = tiny_modules(tmp_path, dropout=0.0)
    breaker, guard, logger = BreakLayerOne(), DivergenceGuard(nonfinite=policy), ScalarLogger()
    trainer = tiny_trainer(tmp_path, [breaker, guard], max_steps=10, logger=logger)
    trainer.fit(module, data)
    return trainer, module, breaker, guard, logger


def test_skip_skips_exactly_the_broken_steps_and_goes_on(tmp_path):
    trainer, module, breaker, guard, logger = fit(tmp_path, "skip")
    assert trainer.global_step == 10 and guard.diverged_at is None
    after = {**breaker.before, 10: torch.cat([p.detach().flatten() for p in module.parameters()])}
    unchanged = {s for s in range(10) if torch.equal(after[s], after[s + 1])}
    assert unchanged == BAD_STEPS  # no update on a skipped step, an update on every other
    assert torch.isfinite(after[10]).all()
    states = trainer.optimizers[0].state.values()
    assert {int(s["step"]) for s in states} == {10 - len(BAD_STEPS)}  # Adam's own step count skips too
    assert guard.skipped == 3 and guard.skipped_by_layer == {1: 3}
    assert logger.scalars["nonfinite/skipped_steps"][-1][1] == 3
    assert logger.last("nonfinite/skipped/layer_1") == 3 and logger.last("nonfinite/skipped/layer_0") == 0


def test_stop_ends_the_run_at_the_first_broken_step(tmp_path):
    trainer, module, breaker, guard, logger = fit(tmp_path, "stop")
    assert guard.diverged_at is not None and trainer.global_step < 10 and guard.skipped == 0


def test_the_counts_survive_a_checkpoint():
    guard = DivergenceGuard(nonfinite="skip")
    guard.load_state_dict({"skipped": 4, "skipped_by_layer": {"1": 3, "0": 1}})
    assert guard.skipped == 4 and guard.skipped_by_layer == {1: 3, 0: 1}
    assert DivergenceGuard(nonfinite="skip").state_dict() == {"skipped": 0, "skipped_by_layer": {}}


def test_an_unknown_policy_is_refused():
    with pytest.raises(ConfigError, match="unknown nonfinite policy 'ignore'; choose one of stop, skip"):
        DivergenceGuard(nonfinite="ignore")


def test_the_report_counts_skipped_steps_per_layer(tmp_path):
    """The report's row holds the fit's own counts (3 skips, all in block 1), as the paper's per-layer NaN plot."""
    *_, logger = fit(tmp_path, "skip")
    scalars = {tag: pd.Series(dict(points)) for tag, points in logger.scalars.items()}
    log = RunLog(tmp_path, {"name": "skip", "config": "skip", "overrides": {}, "seed": 0}, {"status": "finished"}, scalars)
    (row,) = runs_table([log]).to_dict("records")
    assert (row["skipped_layer_0"], row["skipped_layer_1"], row["nonfinite_skipped"]) == (0, 3, 3)
    table = markdown_table(summarize(runs_table([log]), [log]), []).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert table[2].strip("|").split("|")[header.index("skips by layer")].strip() == "L1 3"


def test_a_configuration_shows_its_seeds_mean_skips_per_layer():
    """Seed 1 never skipped (logged nothing): it counts 0, so block 1's mean is (3 + 0) / 2; zeros left out."""
    seeds = pd.DataFrame({"skipped_layer_0": [0.0, math.nan], "skipped_layer_1": [3.0, math.nan],
                          "skipped_layer_10": [1.0, 1.0]})
    assert skips_of(seeds) == "L1 1.5 · L10 1"
    assert skips_of(seeds.assign(skipped_layer_1=0.0, skipped_layer_10=0.0)) == "0"
    assert math.isnan(skips_of(pd.DataFrame({"val_loss": [2.0]})))
    assert layer_counts({"skipped_layer_2": 1.0, "skipped_layer_1": 2.0}) == "L1 2 · L2 1"
