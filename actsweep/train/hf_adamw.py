"""Hugging Face's own AdamW (`optim: adamw_hf`, transformers <= 4.x `optimization.AdamW`), the update
ReLU's Revival trained with (its `train.yaml:10`, `train_utils.py:128`).

It differs from `torch.optim.AdamW` in two places: eps is added to sqrt(v) *before* the bias
correction (torch adds eps to sqrt(v / (1 - beta2^t))), and the decoupled decay `p -= lr·wd·p` is
applied *after* the Adam update, to the updated weights (torch decays first). On the same gradients
the two differ by O(lr·wd·update) and where sqrt(v) is near eps.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


class HFAdamW(torch.optim.Optimizer):
    """`transformers.optimization.AdamW(correct_bias=True)`: the formula, one parameter at a time."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
