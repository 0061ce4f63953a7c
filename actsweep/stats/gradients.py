"""Gradient L2 norms, total and per block, before clipping and after AMP unscaling.

Lightning calls `on_before_optimizer_step` after unscaling and before clipping, which is exactly the
"grad norm" the blog reports. Under DDP the gradients are already averaged across processes, so the
norm needs no further reduction (FSDP's sharded gradients are not supported).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from actsweep.declarations import Chart, Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import is_logging_step, layer_index, publish
from actsweep.stats.metrics import grad_norms


def grad_norm_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters by group: `block_{i}` per transformer block, `embeddings`, `slopes` (a global
    learnable slope) and `head` (final norm and LM head). Tied weights count once, as embeddings."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name.startswith("blocks."):
            key = f"block_{layer_index(name)}"
        elif name.startswith(("wte.", "wpe.")):
            key = "embeddings"
        elif name.startswith("slopes."):
            key = "slopes"
        else:
            key = "head"
        groups.setdefault(key, []).append(p)
    return groups


def block_parameters(model: nn.Module) -> dict[int, list[nn.Parameter]]:
    """The parameters of each transformer block, by layer index."""
    return {int(k.removeprefix("block_")): v for k, v in grad_norm_groups(model).items() if k.startswith("block_")}


class GradNorms(Statistic):
    """Logs `grad/norm` (total) and `grad/norm/{block_i,embeddings,head,slopes}` on logging steps."""

    declaration = Declaration(
        charts=(
            Chart("residual stream and gradients", "gradient norm per block", (r"grad/norm/block_\d+",)),
            Chart("residual stream and gradients", "gradient norm: total, embeddings, head, slopes",
                  (r"grad/norm", r"grad/norm/(embeddings|head|slopes)")),
        ),
        columns=(Column("grad_norm", "grad/norm", "grad norm", 2, place=70),),
        hparams=((90, "grad/norm"),),
    )

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, list[nn.Parameter]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._groups = grad_norm_groups(pl_module.model)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if not is_logging_step(trainer):
            return
        self.computations += 1
        total, norms = grad_norms(self._groups)
        publish(trainer, {"grad/norm": total, **{f"grad/norm/{k}": v for k, v in norms.items()}})
