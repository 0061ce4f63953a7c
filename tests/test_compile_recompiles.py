"""A compiled fit with every statistic on compiles no more graphs than a plain compiled fit: armed
forwards (logging steps, validation, the entropy probe) run eagerly instead of recompiling."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from actsweep.stats import AttentionEntropy, FFNStats, GradNorms, NormStats, SlopeMonitor
from actsweep.stats.common import ArmedHooks, eager_if_armed
from helpers import ScalarLogger, tiny_modules, tiny_trainer


@pytest.fixture
def aot_eager(monkeypatch) -> None:
    """`Module.compile()` with the aot_eager backend: Dynamo and AOTAutograd, no inductor C++ build."""
    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(torch.nn.Module.compile, backend="aot_eager"))


def compiled_fit(folder, callbacks: list, **model) -> tuple[int, ScalarLogger]:
    """Graphs Dynamo compiled (its own counter) in a 6-step fit validating twice, and the scalars logged."""
    torch._dynamo.reset()
    counters.clear()
    L.seed_everything(7)
    module, data = tiny_modules(folder, **{"activation": "learnable_leaky_relu", **model}, compile=True)
    logger = ScalarLogger()
    trainer = tiny_trainer(folder, callbacks, logger=logger, max_steps=6, log_every_n_steps=3,
                           limit_val_batches=None, val_check_interval=3)
    trainer.fit(module, data)
    assert not counters["graph_break"], dict(counters["graph_break"])
    return counters["stats"]["unique_graphs"], logger


def test_statistics_add_no_recompiles(tmp_path, aot_eager):
    plain, _ = compiled_fit(tmp_path / "plain", [])
    stats, logger = compiled_fit(tmp_path / "stats", [FFNStats(), GradNorms(), AttentionEntropy(), SlopeMonitor()])
    assert plain >= 1 and stats <= plain
    for tag in ("ffn/act_mean", "ffn/dead_units", "attn/entropy", "grad/norm", "slope/layer_0"):
        assert len(logger.scalars[tag]) == 2, tag  # every statistic was still measured, twice


def test_norm_statistics_add_no_recompiles(tmp_path, aot_eager):
    """NormStats (armed through ArmedHooks like the others since) on a compiled DyT fit: no graph more
    than the plain compiled fit, and the saturation measured at both logging steps. Measured: this
    held before the change too (its hooks' bool flag did not recompile), so it guards, not proves, it."""
    plain, _ = compiled_fit(tmp_path / "plain", [], norm="dyt")
    stats, logger = compiled_fit(tmp_path / "stats", [NormStats(), FFNStats()], norm="dyt")
    assert plain >= 1 and stats <= plain
    saturated = [tag for tag in logger.scalars if tag.startswith("norm/saturated/")]
    assert saturated and all(len(logger.scalars[tag]) == 2 for tag in saturated)


def test_armed_statistics_leave_compiled_code_elsewhere_alone():
    """The stance is scoped to the forward `eager_if_armed` wraps and to the model whose hooks are
    armed: while hooks on one model are armed, a function compiled elsewhere in the process and a
    second model's forward still compile, and only the armed model's wrapped call runs eagerly."""
    torch._dynamo.reset()
    counters.clear()
    # two kinds of module, so that neither can reuse the graph Dynamo compiled for the other
    armed_model, other_model, x = torch.nn.Softplus(), torch.nn.Linear(3, 3), torch.ones(3)
    hooks, seen = ArmedHooks(), []
    hooks.register_input(armed_model, lambda _mod, inp: seen.append(inp))
    hooks.armed = "train"
    try:
        elsewhere = torch.compile(lambda x: x * 2 + 1, backend="eager")
        assert torch.equal(elsewhere(x), torch.full((3,), 3.0))
        assert counters["stats"]["unique_graphs"] == 1
        with eager_if_armed(other_model):  # another model's forward, its own hooks not armed
            torch.compile(other_model, backend="eager")(x)
        assert counters["stats"]["unique_graphs"] == 2
        with eager_if_armed(armed_model):
            torch.compile(armed_model, backend="eager")(x)
        assert counters["stats"]["unique_graphs"] == 2 and len(seen) == 1  # it ran eagerly, its hook fired
    finally:
        hooks.armed = None
    with eager_if_armed(armed_model):  # nothing armed: the wrapped call compiles too
        torch.compile(armed_model, backend="eager")(x)
    assert counters["stats"]["unique_graphs"] == 3
    hooks.remove()
