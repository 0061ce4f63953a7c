"""AdamW's parameter groups and kernel, decided before the first step.

Weight-decay scopes: ``matrices`` decays tensors of two or more dimensions (GPT-2, nanoGPT, ReLU's
Revival's `MyTrainer`); ``all`` decays every parameter in one group, as the blog's code did with
``AdamW(model.parameters(), weight_decay=0.01)``. Learnable slopes always get ``slope_weight_decay``.
The scalars of dynamic norms (DyT's alpha, Derf's alpha and shift, DyISRU's beta) and the embedding
scale are decayed with ``weight_decay`` only when ``decay_norm_scalars`` (DyT's LLaMA code decays every
parameter: other_tasks/LLaMA/main_training_llama.py:119-120; nanoGPT-style groups decay no scalar).

Kernels: a fused AdamW unscales fp16 gradients inside its own step. Under a GradScaler
(``precision: 16-mixed``) Lightning therefore never unscales before `on_before_optimizer_step` (grad
norms would be logged times the loss scale), and its MixedPrecision plugin (16-mixed and bf16-mixed)
raises at the first clipping for such an optimizer. ``auto`` takes the fused kernel on CUDA only
where neither applies (foreach, torch's CUDA default, otherwise), and ``fused`` asked for where one
applies is refused before training.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Literal

import torch
from torch import nn

from actsweep.errors import ConfigError, check_choice
from actsweep.model.activations import is_slope
from actsweep.model.norms import is_norm_scalar
from actsweep.train.hf_adamw import HFAdamW
from actsweep.train.schedules import check_schedule

DECAY_SCOPES: dict[str, Callable[[nn.Parameter], bool]] = {
    "matrices": lambda p: p.dim() >= 2,
    "all": lambda p: True,
}
ADAMW_KERNELS = ("auto", "fused", "foreach", "for_loop")
# The update rule: torch's AdamW, or Hugging Face's (ReLU's Revival's `adamw_hf`; no fused kernel).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adamw": torch.optim.AdamW, "adamw_hf": HFAdamW}
DecayScope = Literal[tuple(DECAY_SCOPES)]
AdamWKernel = Literal[ADAMW_KERNELS]
OptimizerName = Literal[tuple(OPTIMIZERS)]


def parameter_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, slope_weight_decay: float,
                     scope: str, decay_norm_scalars: bool = False) -> list[dict]:
    """AdamW groups ``decay``, ``no_decay`` and ``slopes`` (empty ones left out)."""
    check_optimizer(scope, "auto")
    groups: dict[str, dict] = {
        "decay": {"params": [], "weight_decay": weight_decay},
        "no_decay": {"params": [], "weight_decay": 0.0},
        "slopes": {"params": [], "weight_decay": slope_weight_decay},
    }
    for name, p in named:
        if is_slope(name):
            key = "slopes"
        elif is_norm_scalar(name):
            key = "decay" if decay_norm_scalars else "no_decay"
        else:
            key = "decay" if DECAY_SCOPES[scope](p) else "no_decay"
        groups[key]["params"].append(p)
    return [dict(g, name=k) for k, g in groups.items() if g["params"]]


def check_optimizer(decay_scope: str, kernel: str) -> None:
    """Refuse unknown names at construction, before anything runs."""
    check_choice("decay_scope", decay_scope, DECAY_SCOPES)
    check_choice("adamw_kernel", kernel, ADAMW_KERNELS)


def check_update_rule(optimizer: str, kernel: str) -> None:
    """Refuse an unknown update rule, and a kernel choice for one that has no kernels."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer != "adamw" and kernel != "auto":
        raise ConfigError(f"--model.adamw_kernel {kernel} applies to torch's AdamW only; "
                          f"--model.optimizer {optimizer} has one kernel: leave adamw_kernel at auto")


def build_optimizer(optimizer: str, groups: list[dict], lr: float, betas: tuple[float, float], eps: float,
                    kernel_args: dict[str, bool]) -> torch.optim.Optimizer:
    """The optimizer over `groups`; `kernel_args` (from :func:`adamw_kernel_args`) only for torch's."""
    extra = kernel_args if optimizer == "adamw" else {}
    return OPTIMIZERS[optimizer](groups, lr=lr, betas=betas, eps=eps, **extra)


def adamw_kernel_args(kernel: str, device_type: str, amp: bool = False, grad_scaler: bool = False,
                      clipping: bool = False) -> dict[str, bool]:
    """``torch.optim.AdamW`` keyword arguments for ``kernel`` on ``device_type`` (``{}``: torch's choice).

    ``amp``: Lightning's MixedPrecision plugin (16-mixed, bf16-mixed), which refuses to clip for any
    optimizer that unscales inside its step; ``grad_scaler``: it scales the loss (16-mixed);
    ``clipping``: a gradient_clip_val is set.
    """
    check_optimizer("all", kernel)
    conflict = "gradient clipping" if amp and clipping else "a GradScaler" if grad_scaler else None
    if kernel == "fused" and conflict:
        raise ConfigError(
            f"--model.adamw_kernel fused cannot run under mixed precision with {conflict}: a fused AdamW "
            "unscales the gradients inside its step, so Lightning can neither clip them nor log them unscaled; "
            "use --model.adamw_kernel auto (foreach here), or a precision without autocast (32-true, bf16-true)"
        )
    if kernel == "auto":
        return {"fused": True} if device_type == "cuda" and not conflict else {}
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[kernel]


def check_optimizer_settings(lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                             slope_weight_decay: float, schedule: str, warmup: float, min_lr_ratio: float) -> None:
    """Refuse, before anything is built or written, settings that AdamW or the schedule would reject
    mid-run or silently train with (lr 0, a negative decay)."""
    named = {"lr": lr, "eps": eps, "weight_decay": weight_decay, "slope_weight_decay": slope_weight_decay,
             "warmup": warmup, "min_lr_ratio": min_lr_ratio}
    for name, value in [*named.items(), ("betas", betas[0]), ("betas", betas[1])]:
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
    if lr <= 0 or eps <= 0:
        raise ConfigError(f"lr and eps must be positive, got lr={lr}, eps={eps}")
    if not all(0 <= beta < 1 for beta in betas):
        raise ConfigError(f"betas must both lie in [0, 1), got {tuple(betas)}")
    for name in ("weight_decay", "slope_weight_decay", "warmup"):
        if named[name] < 0:
            raise ConfigError(f"{name} must be >= 0, got {named[name]}")
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    check_schedule(schedule)
