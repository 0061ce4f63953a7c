"""Precision x AdamW kernel x clipping x accumulation: each combination trains, or is refused before the
first step, and `grad/norm` is the unscaled pre-clip norm in all of them.

torch 2.13 runs a fused AdamW and a 16-mixed GradScaler on CPU, so the decision a GPU run makes can be
made, and fail, here: `OnCuda` is the module deciding its optimizer as it would on a GPU, and `FP16`
is Lightning's 16-mixed plugin with its GradScaler (for `precision="16-mixed"` on a CPU Lightning
silently substitutes bf16-mixed).
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from actsweep.errors import ConfigError
from actsweep.stats import GradNorms
from actsweep.train.module import ActSweepModule
from actsweep.train.optim import adamw_kernel_args, parameter_groups
from helpers import ScalarLogger, fit_error, tiny_modules, tiny_trainer, write_config


class OnCuda(ActSweepModule):
    """Chooses its AdamW kernel as on a GPU (the tensors stay on the CPU)."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")


def precision_args(precision: str) -> dict:
    if precision == "16-mixed":
        return {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}
    return {"precision": precision}


def first_grad_norm(folder, precision: str, kernel: str = "auto", clip: float | None = None, accumulate: int = 1,
                    module_class=ActSweepModule) -> tuple[float, torch.optim.Optimizer, int]:
    """grad/norm logged at step 0 of a 2-step fit, the optimizer it ran and the steps it took."""
    module, data = tiny_modules(folder, dropout=0.0, adamw_kernel=kernel)
    torch.manual_seed(0)  # the same initial weights in every call
    module = module_class(**module.hparams)
    logger = ScalarLogger()
    trainer = tiny_trainer(folder, [GradNorms()], max_steps=2, gradient_clip_val=clip,
                           accumulate_grad_batches=accumulate, logger=logger, **precision_args(precision))
    trainer.fit(module, data)
    return logger.scalars["grad/norm"][0][1], trainer.optimizers[0], trainer.global_step


# (amp, grad_scaler, clipping) of each precision with and without gradient_clip_val.
SETTINGS = {
    "32-true": (False, False, False), "32-true+clip": (False, False, True),
    "bf16-true+clip": (False, False, True),
    "bf16-mixed": (True, False, False), "bf16-mixed+clip": (True, False, True),
    "16-mixed": (True, True, False), "16-mixed+clip": (True, True, True),
}
# auto's choice on CUDA: fused only where Lightning can clip and unscale ({} = torch's foreach).
AUTO_ON_CUDA = {"32-true": {"fused": True}, "32-true+clip": {"fused": True}, "bf16-true+clip": {"fused": True},
                "bf16-mixed": {"fused": True}, "bf16-mixed+clip": {}, "16-mixed": {}, "16-mixed+clip": {}}


@pytest.mark.parametrize("setting", SETTINGS)
def test_adamw_kernel_decision_in_every_precision(setting):
    amp, scaler, clipping = SETTINGS[setting]
    assert adamw_kernel_args("auto", "cuda", amp, scaler, clipping) == AUTO_ON_CUDA[setting]
    assert adamw_kernel_args("auto", "cpu", amp, scaler, clipping) == {}
    assert adamw_kernel_args("foreach", "cuda", amp, scaler, clipping) == {"foreach": True}
    assert adamw_kernel_args("for_loop", "cuda", amp, scaler, clipping) == {"foreach": False}
    if AUTO_ON_CUDA[setting]:
        assert adamw_kernel_args("fused", "cuda", amp, scaler, clipping) == {"fused": True}
    else:
        with pytest.raises(ConfigError, match="fused cannot run under mixed precision"):
            adamw_kernel_args("fused", "cuda", amp, scaler, clipping)


def test_revival_combination_trains_with_unscaled_grad_norm_as_on_a_gpu(tmp_path):
    """16-mixed + clipping 1.0 + accumulation, the optimizer chosen as on CUDA: today's revival.yaml
    on a GPU. It used to pick a fused AdamW and crash in Lightning's clip_gradients."""
    reference, _, _ = first_grad_norm(tmp_path, "32-true", accumulate=2)
    norm, optimizer, steps = first_grad_norm(tmp_path, "16-mixed", clip=1.0, accumulate=2, module_class=OnCuda)
    assert steps == 2 and not optimizer.defaults.get("fused")
    assert norm == pytest.approx(reference, rel=0.02)  # not 65536 x: the GradScaler's initial scale


@pytest.mark.parametrize("precision, clip, accumulate, kernel", [
    ("16-mixed", None, 1, "auto"), ("16-mixed", 1.0, 1, "foreach"), ("16-mixed", None, 2, "for_loop"),
    ("bf16-mixed", 1.0, 2, "auto"), ("bf16-mixed", None, 1, "fused"), ("bf16-true", 1.0, 2, "fused"),
    ("32-true", 1.0, 2, "auto"), ("32-true", None, 1, "foreach"),
])
def test_each_legal_combination_trains_and_logs_the_unscaled_norm(tmp_path, precision, clip, accumulate, kernel):
    reference, _, _ = first_grad_norm(tmp_path, "32-true", kernel="for_loop", accumulate=accumulate)
    norm, optimizer, steps = first_grad_norm(tmp_path, precision, kernel, clip, accumulate, module_class=OnCuda)
    assert steps == 2
    expected = adamw_kernel_args(kernel, "cuda", precision.endswith("mixed"), precision == "16-mixed", bool(clip))
    assert bool(optimizer.defaults.get("fused")) == bool(expected.get("fused"))
    assert norm == pytest.approx(reference, rel=0.02 if precision in ("16-mixed", "32-true") else 0.1)  # not x 65536


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_fused_with_clipping_under_mixed_precision_is_refused_before_the_first_step(tmp_path, capsys, precision):
    config = write_config(tmp_path, trainer={"precision": precision, "gradient_clip_val": 1.0},
                          model={"adamw_kernel": "fused"})
    error = fit_error(["fit", "--config", str(config)], capsys)
    assert "fused cannot run under mixed precision with gradient clipping" in error
    assert not list(tmp_path.rglob("*.ckpt"))


def test_decay_scope_all_decays_every_parameter_in_one_group():
    module = ActSweepModule(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=4, decay_scope="all",
                            weight_decay=0.01)
    groups = parameter_groups(module.model.named_parameters(), 0.01, 0.0, "all")
    assert [g["name"] for g in groups] == ["decay"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in module.model.parameters()}
    matrices = parameter_groups(module.model.named_parameters(), 0.01, 0.0, "matrices")
    assert all(p.dim() >= 2 for p in matrices[0]["params"]) and all(p.dim() == 1 for p in matrices[1]["params"])


def test_unknown_kernel_or_scope_is_refused_at_construction():
    for bad in ({"adamw_kernel": "apex"}, {"decay_scope": "biases"}):
        with pytest.raises(ConfigError, match="choose one of"):
            ActSweepModule(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=4, **bad)
