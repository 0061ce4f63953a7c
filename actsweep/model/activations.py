"""FFN activations by name.

Each entry of `ACTIVATIONS` builds the activation module of one layer. Learnable leaky ReLU keeps its
negative-side slope(s) as parameters; `SlopeBank` decides how many exist: one for the whole model
(`global`), one per layer (`layer`, what ReLU's Revival's code called "global"), or one per hidden
unit (`neuron`).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn
from actsweep.errors import check_choice

SLOPE_SCOPES = ("global", "layer", "neuron")
SlopeScope = Literal[SLOPE_SCOPES]


class LeakyReLU(nn.Module):
    """max(0, x) + slope * min(0, x) with a slope tensor that may be learnable and shared."""

    def __init__(self, slope: torch.Tensor) -> None:
        super().__init__()
        self.slope = slope  # an nn.Parameter registers itself; a plain tensor is a fixed slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A one-element slope takes x's rank, as ReLU's Revival's (1, 1, 1) slope (model_utils.py:356,360):
        # a 0-dim fp32 tensor would not promote an fp16 x, and the slope's gradient (a sum over every
        # negative input) would overflow fp16; a dimensioned one runs x·slope and its gradient in fp32.
        slope = self.slope.reshape([1] * x.dim()) if self.slope.dim() == 0 else self.slope
        return torch.where(x > 0, x, x * slope)


class ReLUSquared(nn.Module):
    """relu(x)², the MLP activation of modded-nanogpt's records and of Primer (So et al., 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class SlopeBank(nn.Module):
    """Owns the slopes of learnable leaky ReLUs so that a `global` slope is one parameter."""

    def __init__(self, scope: str, init: float, hidden: int) -> None:
        super().__init__()
        check_choice("slope_scope", scope, SLOPE_SCOPES)
        self.scope, self.init, self.hidden = scope, init, hidden
        self.register_parameter("shared", None)  # created by the first layer that asks for it

    def slope_for_layer(self) -> nn.Parameter:
        if self.scope == "global":
            if self.shared is None:
                self.shared = nn.Parameter(torch.tensor(self.init))
            return self.shared
        shape = (self.hidden,) if self.scope == "neuron" else ()
        return nn.Parameter(torch.full(shape, self.init))


ActivationFactory = Callable[[SlopeBank, float], nn.Module]

ACTIVATIONS: dict[str, ActivationFactory] = {
    "relu": lambda bank, leak: nn.ReLU(),
    "gelu": lambda bank, leak: nn.GELU(approximate="none"),
    "gelu_tanh": lambda bank, leak: nn.GELU(approximate="tanh"),
    "leaky_relu": lambda bank, leak: nn.LeakyReLU(leak),
    "learnable_leaky_relu": lambda bank, leak: LeakyReLU(bank.slope_for_layer()),
    "relu2": lambda bank, leak: ReLUSquared(),
    "silu": lambda bank, leak: nn.SiLU(),
}
ActivationName = Literal[tuple(ACTIVATIONS)]


def check_activation(name: str) -> None:
    check_choice("activation", name, ACTIVATIONS)


def build_activation(name: str, bank: SlopeBank, leaky_slope: float) -> nn.Module:
    check_activation(name)
    return ACTIVATIONS[name](bank, leaky_slope)


def is_slope(param_name: str) -> bool:
    """Whether a parameter name (as from `named_parameters`) is a learnable leaky-ReLU slope."""
    return param_name.endswith(".slope") or param_name.endswith("slopes.shared")


__all__ = ["ACTIVATIONS", "SLOPE_SCOPES", "ActivationName", "SlopeScope", "LeakyReLU", "ReLUSquared", "SlopeBank", "build_activation", "check_activation", "is_slope"]
