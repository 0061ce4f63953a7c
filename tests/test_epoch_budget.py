"""`EpochBudget`: one exact epoch as the stopping rule (ReLU's Revival's `num_train_epochs: 1`)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import yaml

from actsweep import cli
from actsweep.errors import ConfigError
from actsweep.train.epochs import EpochBudget, epoch_steps
from helpers import Recorder, tiny_modules, tiny_trainer, write_config


def test_epoch_steps_by_hand():
    assert epoch_steps(1000, 8, 1, 1) == 125
    assert epoch_steps(1003, 8, 4, 1) == 31  # 125 micro-batches, remainder windows left out; 31 steps of 4
    assert epoch_steps(1000, 8, 1, 0.5) == 62
    assert epoch_steps(1000, 8, 2, 3) == 187


def test_one_epoch_visits_every_window_once_then_stops(tmp_path):
    module, data = tiny_modules(tmp_path, batch_size=8)
    data.sampling = "epoch"
    data.setup("fit")
    windows = data.train_windows()
    recorder = Recorder()
    trainer = tiny_trainer(tmp_path, [EpochBudget(1), recorder], max_steps=-1)
    trainer.fit(module, data)
    assert trainer.global_step == windows // 8 == len(recorder.inputs)
    # every recorded input is a window of the non-overlapping grid, none more often than the grid has it
    tokens, block = data._tokens("train"), data.block_size
    grid = Counter(tuple(tokens[i:i + block].tolist()) for i in range(0, windows * (block + 1), block + 1))
    seen = Counter(tuple(row.tolist()) for batch in recorder.inputs.values() for row in batch)
    assert sum(seen.values()) == windows // 8 * 8 and not seen - grid


def test_max_steps_still_caps_the_budget(tmp_path):
    module, data = tiny_modules(tmp_path)
    trainer = tiny_trainer(tmp_path, [EpochBudget(1)], max_steps=3)
    trainer.fit(module, data)
    assert trainer.global_step == 3


def test_a_budget_below_one_step_is_refused(tmp_path):
    module, data = tiny_modules(tmp_path)
    with pytest.raises(ConfigError, match="less than one optimizer step"):
        tiny_trainer(tmp_path, [EpochBudget(1e-6)], max_steps=-1).fit(module, data)
    with pytest.raises(ConfigError, match="epochs must be positive"):
        EpochBudget(0)


def test_the_cli_fits_one_budget_with_max_steps_minus_one(tmp_path):
    """`actsweep fit` with ReLU's Revival's trainer settings: max_steps -1 and an EpochBudget, named
    here by its short name (configs/revival.yaml's full class_path: test_smoke's unsmoked dry runs)."""
    budget = {"class_path": "EpochBudget", "init_args": {"epochs": 0.02}}
    config = write_config(tmp_path, trainer={"max_steps": -1, "val_check_interval": 2})
    cli.main(["fit", "--config", str(config), "--trainer.callbacks+", yaml.safe_dump(budget, default_flow_style=True)])
    module, data = tiny_modules(tmp_path)
    data.setup("fit")
    checkpoint = torch.load(next((tmp_path / "logs").rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == epoch_steps(data.train_windows(), 8, 1, 0.02) == 4
