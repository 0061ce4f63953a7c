"""Norms by name (``--model.norm``, ``--model.final_norm``), including the normalization-free layers.

Each entry of `NORMS` builds the norm of one site ("attn", "ffn" or "final") from the config. The
element-wise replacements of LayerNorm squash each coordinate with a learnable scalar, then apply
per-channel weight and (where ``bias`` has the "norm" site) bias:

- ``dyt``, Dynamic Tanh (Zhu et al., arXiv 2503.10622): ``weight * tanh(alpha * x) + bias``
  (jiachenzhu/DyT dynamic_tanh.py:13-22);
- ``derf``, Dynamic erf (arXiv 2512.10938): ``weight * erf(alpha * x + shift) + bias``
  (zlab-princeton/Derf "language model/model_derf.patch", class Dynamic_erf, patch lines 9-25);
- ``dyisru`` (arXiv 2503.21708): ``weight * x / sqrt(beta + x² + eps) + bias``
  (abcde17/dynamic-activation-functions nanoGPT/dyaf.py:92-104, eps 1e-5 at dyaf.py:95).

Their `unit_slope(x)` is the derivative of the squashing function at x, divided by its value at
the origin (1 where the norm is linear, → 0 where it saturates); the statistics call a coordinate
saturated where it is below a threshold.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import nn

NORM_SITES = ("attn", "ffn", "final")


class DynamicNorm(nn.Module):
    """Per-channel ``weight`` and optional ``bias`` after an element-wise squashing `squash(x)`."""

    scalars: tuple[str, ...] = ()  # names of the learnable scalar parameters

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.squash(x) * self.weight
        return y if self.bias is None else y + self.bias


class DyT(DynamicNorm):
    scalars = ("alpha",)

    def __init__(self, dim: int, bias: bool, alpha: float) -> None:
        super().__init__(dim, bias)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x)

    def unit_slope(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - torch.tanh(self.alpha * x).square()  # tanh'(u) = 1 - tanh²(u), 1 at u = 0


class Derf(DynamicNorm):
    scalars = ("alpha", "shift")

    def __init__(self, dim: int, bias: bool, alpha: float, shift: float) -> None:
        super().__init__(dim, bias)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.shift = nn.Parameter(torch.tensor(float(shift)))

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(self.alpha * x + self.shift)

    def unit_slope(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(self.alpha * x + self.shift).square())  # erf'(u) = 2/√π·exp(-u²), 2/√π at 0


class DyISRU(DynamicNorm):
    scalars = ("beta",)

    def __init__(self, dim: int, bias: bool, beta: float, eps: float) -> None:
        super().__init__(dim, bias)
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.eps = eps

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(self.beta + x.square() + self.eps)

    def unit_slope(self, x: torch.Tensor) -> torch.Tensor:
        c = self.beta + self.eps  # d/dx x/sqrt(c + x²) = c / (c + x²)^1.5, 1/sqrt(c) at 0
        return (c / (c + x.square())).pow(1.5)


def alpha_for(cfg, site: str) -> float:
    return {"attn": cfg.norm_alpha_attn, "ffn": cfg.norm_alpha_ffn, "final": cfg.norm_alpha_final}[site]


NormFactory = Callable[[object, str, bool], nn.Module]

# (config, site, bias) -> module. The LayerNorm-like entries ignore the site.
NORMS: dict[str, NormFactory] = {
    "layernorm": lambda cfg, site, bias: nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=bias),
    "rmsnorm": lambda cfg, site, bias: nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps),
    "none": lambda cfg, site, bias: nn.Identity(),
    "dyt": lambda cfg, site, bias: DyT(cfg.n_embd, bias, alpha_for(cfg, site)),
    "derf": lambda cfg, site, bias: Derf(cfg.n_embd, bias, alpha_for(cfg, site), cfg.derf_shift),
    "dyisru": lambda cfg, site, bias: DyISRU(cfg.n_embd, bias, cfg.dyisru_beta, cfg.norm_eps),
}
NormName = Literal[tuple(NORMS)]
DYNAMIC_NORMS = frozenset({"dyt", "derf", "dyisru"})

# Normalization of queries and keys, per head, before their product: "rms" is QK-norm as in
# modded-nanogpt and He & Hofmann's normalization-free "OP" block (a parameter-free RMSNorm).
QK_NORMS = {
    "none": lambda head_dim, eps: nn.Identity(),
    "rms": lambda head_dim, eps: nn.RMSNorm(head_dim, eps=eps, elementwise_affine=False),
}
QKNormName = Literal[tuple(QK_NORMS)]


class EmbeddingScale(nn.Module):
    """A learnable scalar multiplying the summed embeddings, initialised at sqrt(n_embd)
    (DyT's LLaMA code, other_tasks/LLaMA/fms_fsdp/models/llama.py:208-209 and 383; Derf's nanoGPT
    patch scales token plus position embeddings, model_derf.patch:108-109 and 127)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def is_norm_scalar(param_name: str) -> bool:
    """Whether a parameter name is a scalar of a dynamic norm or the embedding scale."""
    return param_name.rsplit(".", 1)[-1] in ("alpha", "shift", "beta") or param_name == "embedding_scale.scale"


__all__ = ["DYNAMIC_NORMS", "NORMS", "QK_NORMS", "NORM_SITES", "NormName", "QKNormName", "DyISRU", "DyT", "Derf", "DynamicNorm", "EmbeddingScale", "is_norm_scalar"]
