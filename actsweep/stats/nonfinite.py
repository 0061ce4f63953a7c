"""Per-layer counts of non-finite values: where a diverging run first breaks.

ReLU's Revival's released code plots NaN counts per layer (`plot_layerwise_nan_counts.py`): LayerNorm-
free fp16 runs produce NaNs that the GradScaler skips while the run goes on. Here, on logging steps,
the training forward's FFN activations, attention queries and keys, and residual stream, and the
gradients of every block, are counted (device-side, one transfer) as `nonfinite/<site>/layer_i`.
The report names the earliest layer that went non-finite in a diverged run.
"""

from __future__ import annotations

import lightning as L
import torch

from actsweep.declarations import LAYER, Chart, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import publish, reduce_sums
from actsweep.stats.gradients import block_parameters

# Forward sites, in the order a value passes through a block (the report's order for "first").
SITES = {"q": "blocks.*.attn.hook_q", "k": "blocks.*.attn.hook_k", "act": "blocks.*.mlp.hook_act",
         "resid": "blocks.*.hook_resid"}


def nonfinite_count(x: torch.Tensor) -> torch.Tensor:
    """Number of NaN and infinite elements (int64, on x's device)."""
    return (~torch.isfinite(x)).sum()


def grad_nonfinite_counts(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Non-finite gradient elements over `params` (those without a gradient count as finite)."""
    counts = [nonfinite_count(p.grad) for p in params if p.grad is not None]
    return torch.stack(counts).sum() if counts else torch.zeros((), dtype=torch.int64)


class NonFiniteCounts(Statistic):
    """Logs `nonfinite/{q,k,act,resid,grad}/layer_i` on logging steps (gradients after unscaling)."""

    declaration = Declaration(charts=(
        Chart("non-finite values", "non-finite values per layer and site", (rf"nonfinite/.*/{LAYER}",)),
    ))

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[str, torch.Tensor] = {}
        self._blocks: dict[int, list[torch.nn.Parameter]] = {}

    def register(self, model: torch.nn.Module) -> None:
        for site, pattern in SITES.items():
            self.hooks.register(model, pattern, lambda x, layer, site=site: self._count(site, layer, x))
        self._blocks = block_parameters(model)

    def _count(self, site: str, layer: int, x: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # the training forward, not a probe run in between
            self._counts[f"nonfinite/{site}/layer_{layer}"] = nonfinite_count(x)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.arm_if_logging(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if self.hooks.armed == "train":
            for layer, params in self._blocks.items():
                self._counts[f"nonfinite/grad/layer_{layer}"] = grad_nonfinite_counts(params).to(pl_module.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.hooks.armed != "train":
            return
        self.hooks.armed = None
        self.computations += 1
        counts, self._counts = self._counts, {}
        publish(trainer, dict(zip(counts, reduce_sums(*counts.values()))))  # summed over processes
