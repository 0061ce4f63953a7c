"""Per-layer non-finite counts: counted where a NaN is born, logged on logging steps, and named by
the report as the first layer to break."""

from __future__ import annotations

import math

import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from actsweep.stats.nonfinite import NonFiniteCounts, grad_nonfinite_counts, nonfinite_count
from actsweep.study.outcomes import nonfinite_origin
from helpers import ScalarLogger, tiny_modules, tiny_trainer


def test_counts_by_hand():
    x = torch.tensor([1.0, math.nan, math.inf, -math.inf, 0.0])
    assert nonfinite_count(x).item() == 3
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([math.nan, 1.0, math.nan])
    assert grad_nonfinite_counts([a, b]).item() == 2  # b has no gradient


class PoisonLayer(Callback):
    """Makes the first window of layer 1's FFN pre-activation NaN in the training forward of one step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            point = pl_module.model.blocks[1].mlp.hook_pre
            self.handle = point.register_forward_hook(lambda m, i, out: out.index_put((torch.tensor(0),), torch.tensor(math.nan)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step - 1 == self.step:
            self.handle.remove()


def test_a_nan_is_counted_where_it_is_born(tmp_path):
    module, data = tiny_modules(tmp_path, n_layer=3)
    logger = ScalarLogger()
    trainer = tiny_trainer(tmp_path, [PoisonLayer(step=3), NonFiniteCounts()], max_steps=5, logger=logger)
    trainer.fit(module, data)
    at = lambda tag, step: dict(logger.scalars[tag])[step]  # noqa: E731
    assert all(at(f"nonfinite/{site}/layer_{i}", 2) == 0 for site in ("q", "k", "act", "resid", "grad") for i in range(3))
    assert at("nonfinite/act/layer_0", 3) == 0 and at("nonfinite/resid/layer_0", 3) == 0
    hidden = module.config.mlp_hidden
    assert at("nonfinite/act/layer_1", 3) == data.block_size * hidden  # the whole first window
    assert at("nonfinite/q/layer_1", 3) == 0 and at("nonfinite/resid/layer_2", 3) > 0
    assert at("nonfinite/grad/layer_0", 3) > 0  # backward spreads it to every block
    scalars = {tag: pd.Series(dict(points)) for tag, points in logger.scalars.items()}
    assert nonfinite_origin(scalars) == "first non-finite: layer 1 (act) at step 3"


def test_origin_prefers_the_earliest_step_then_the_forward_pass():
    s = lambda values: pd.Series(values, index=[10, 20, 30], dtype=float)  # noqa: E731
    scalars = {"nonfinite/resid/layer_0": s([0, 0, 5]), "nonfinite/k/layer_2": s([0, 4, 9]),
               "nonfinite/act/layer_2": s([0, 1, 9]), "nonfinite/grad/layer_1": s([0, 7, 9]), "val/loss": s([1, 2, 3])}
    assert nonfinite_origin(scalars) == "first non-finite: layer 2 (k) at step 20"  # forward before backward
    backward = {"nonfinite/grad/layer_0": s([0, 3, 3]), "nonfinite/grad/layer_2": s([0, 1, 1]), "nonfinite/q/layer_0": s([0, 0, 1])}
    assert nonfinite_origin(backward) == "first non-finite: layer 2 (grad) at step 20"  # backward runs top down
    assert nonfinite_origin({"val/loss": s([1, 2, 3])}) == ""
