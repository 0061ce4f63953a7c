"""Named places to observe activations, in the manner of TransformerLens' hook points.

Every `HookPoint` in a model has a dotted name (`blocks.0.mlp.hook_act`), which it knows (`name`,
and `layer` for a point inside `blocks.<i>`) once the model is built (`name_hook_points`). `hooks()`
registers forward hooks on chosen points for the length of a `with` block and always removes them;
`capture()` records what passes through; `run_with_cache` is TransformerLens' call of that name:
the output and every hook point's tensor.
"""

from __future__ import annotations

import fnmatch
import re
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


class HookPoint(nn.Identity):
    """Identity module whose only job is to be a named place for forward hooks. `name` (its dotted
    name in the model) and `layer` (the block it is in, else None) are set by `name_hook_points`."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None
        self.layer: int | None = None

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    return {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}


def name_hook_points(model: nn.Module) -> None:
    """Tell every hook point of `model` its name and layer (call when the model is built)."""
    for name, point in hook_points(model).items():
        block = re.match(r"blocks\.(\d+)\.", name)
        point.name, point.layer = name, int(block[1]) if block else None


# TransformerLens's names for our hook points (a pattern's last part), so notebooks work with both.
TL_ALIASES = {"mlp.hook_post": "mlp.hook_act", "hook_resid_post": "hook_resid"}


def select(model: nn.Module, pattern: str) -> dict[str, HookPoint]:
    """Hook points whose name matches a glob pattern such as `blocks.*.mlp.hook_act`; a pattern in
    TransformerLens's names (`blocks.*.mlp.hook_post`, `blocks.*.hook_resid_post`) selects ours and
    keys them by the name asked for."""
    alias = next(((tl, ours) for tl, ours in TL_ALIASES.items() if pattern.endswith("." + tl) or pattern == tl), None)
    if alias:
        tl, ours = alias
        return {n[: -len(ours)] + tl: m for n, m in select(model, pattern[: -len(tl)] + ours).items()}
    points = {n: m for n, m in hook_points(model).items() if fnmatch.fnmatchcase(n, pattern)}
    if not points:
        raise KeyError(f"no hook point matches {pattern!r}; available: {', '.join(hook_points(model))}")
    return points


@contextmanager
def hooks(model: nn.Module, fwd_hooks: Mapping[str, HookFn]) -> Iterator[None]:
    """Run `fn(tensor, name)` at every hook point matching each pattern; removed on exit, always.

    A hook that returns a tensor replaces the activation (for ablations); `None` leaves it unchanged.
    """
    handles = []
    try:
        for pattern, fn in fwd_hooks.items():
            for name, point in select(model, pattern).items():
                handles.append(point.register_forward_hook(lambda _m, _i, out, n=name, f=fn: f(out, n)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(model: nn.Module, *patterns: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record detached copies of the activations at the matching hook points, keyed by name."""
    cache: dict[str, torch.Tensor] = {}

    def store(t: torch.Tensor, name: str) -> None:
        cache[name] = t.detach()

    with hooks(model, {p: store for p in patterns}):
        yield cache


def run_with_cache(model: nn.Module, *inputs: torch.Tensor, names: tuple[str, ...] = ("*",)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`(output, cache)`: `model(*inputs)` and a detached copy of the tensor at every hook point whose
    name matches one of `names` (default: all), keyed by name, as TransformerLens' `run_with_cache`."""
    with capture(model, *names) as cache:
        output = model(*inputs)
    return output, dict(cache)
