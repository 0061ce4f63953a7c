"""The scalars and saturation of normalization-free norms (dyt, derf, dyisru) during training.

On logging steps: `norm/{scalar}/{site}/layer_{i}` for each block norm's scalar (`alpha`, Derf's
`shift`, DyISRU's `beta`; site `attn` or `ffn`), `norm/{scalar}/final`, `norm/embedding_scale`, and
`norm/saturated/{site}/layer_{i}`, `norm/saturated/final`: the share of the norm's input coordinates
on the training batch where the squashing function's slope, relative to its slope at the origin, is
below `threshold` (for DyT: 1 - tanh²(αx) < 0.1, i.e. |αx| > 1.82). "When does removing LayerNorm
help?" (arXiv 2604.23434) found the saturated share of DyT units predicts whether DyT helps. Silent
for models without such norms. Counts are summed across processes (one collective) before the ratio.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from actsweep.declarations import Chart, Declaration
from actsweep.model.norms import DynamicNorm
from actsweep.stats.base import Statistic
from actsweep.stats.common import publish, reduce_sums
from actsweep.stats.metrics import saturation_counts


def dynamic_norms(model: nn.Module) -> dict[str, DynamicNorm]:
    """Tag suffix (`attn/layer_0`, `ffn/layer_0`, ..., `final`) -> each dynamic norm of a GPT."""
    norms = {}
    for i, block in enumerate(model.blocks):
        for site, norm in (("attn", block.norm_attn), ("ffn", block.norm_mlp)):
            norms[f"{site}/layer_{i}"] = norm
    norms["final"] = model.norm_final
    return {tag: norm for tag, norm in norms.items() if isinstance(norm, DynamicNorm)}


def norm_scalars(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tag -> device scalar: every dynamic norm's scalars and the embedding scale."""
    metrics = {f"norm/{name}/{tag}": getattr(norm, name).detach()
               for tag, norm in dynamic_norms(model).items() for name in norm.scalars}
    if hasattr(model.embedding_scale, "scale"):
        metrics["norm/embedding_scale"] = model.embedding_scale.scale.detach()
    return metrics


class NormStats(Statistic):
    """Scalars of dyt/derf/dyisru norms and the saturated share of their inputs, on logging steps.

    The report's `saturated_pct` column (the mean over norms) is computed in `study/outcomes.py`.

    Args:
        threshold: a coordinate is saturated where the squashing slope, relative to the origin's, is below it.
    """

    declaration = Declaration(charts=(
        Chart("normalization-free norms", "saturated share per norm", (r"norm/saturated/.*",)),
        Chart("normalization-free norms", "learnable scalars per norm", (r"norm/(alpha|shift|beta)/.*", r"norm/embedding_scale")),
    ))

    def __init__(self, threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold = threshold
        self._active = False
        self._counts: dict[str, torch.Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._active = bool(norm_scalars(pl_module.model))
        super().setup(trainer, pl_module, stage)

    def register(self, model: nn.Module) -> None:
        for tag, norm in dynamic_norms(model).items():
            self.hooks.register_input(norm, lambda mod, x, tag=tag: self._count(tag, mod, x))

    def _count(self, tag: str, norm: DynamicNorm, x: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # the training forward, not a no-grad probe
            with torch.no_grad():
                self._counts[tag] = saturation_counts(norm.unit_slope(x), self.threshold)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self._active:
            self.arm_if_logging(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.hooks.armed != "train":
            return
        self.hooks.armed = None
        self.computations += 1
        saturated = {}
        if self._counts:
            tags = list(self._counts)
            (counts,) = reduce_sums(torch.stack([self._counts[t] for t in tags]))
            saturated = {f"norm/saturated/{t}": c[0] / c[1] for t, c in zip(tags, counts)}
            self._counts.clear()
        publish(trainer, {**norm_scalars(pl_module.model), **saturated})
