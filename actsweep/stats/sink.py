"""Attention-sink share: how much attention each layer puts on the first token.

At each validation end, on the data module's probe batch (the windows `AttentionEntropy` uses):
`attn/sink_share/layer_{i}` and their mean `attn/sink_share`, the mean over heads, windows and query
positions t >= 1 of softmax(q kᵀ / sqrt(d))[t, 0]. Query 0 sees only token 0 (a share of 1 by
construction) and is left out. Models trained without normalization, or with softmax attention at
scale, park attention mass on the first token ("attention sinks", Xiao et al. 2023, arXiv 2309.17453);
the normalization-free literature tracks this share per layer.

This file is the whole statistic: its declaration puts it on a Custom Scalars chart, in the report
(`sink_pct`) and in the HParams tab. Turn it on with `--trainer.callbacks+ actsweep.stats.sink.AttentionSink`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from actsweep.declarations import LAYER, Chart, Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import per_layer, publish
from actsweep.stats.metrics import causal_scores


def sink_share(s: torch.Tensor) -> torch.Tensor:
    """The mean attention probability on key 0 of causal scores `s` (B, H, T, T), over batch, heads
    and the queries 1..T-1."""
    return torch.softmax(s, dim=-1)[..., 1:, 0].mean()


class AttentionSink(Statistic):
    """The attention mass on the first token, per layer, at each validation end.

    Args:
        probe_windows: windows asked of `probe_batch(n)` (None: the data module's default).
    """

    declaration = Declaration(
        charts=(Chart("attention sinks", "attention mass on the first token per layer", (rf"attn/sink_share/{LAYER}",)),),
        columns=(Column("sink_pct", "attn/sink_share", "sink share %", 1, place=95, scale=100),),
        hparams=((130, "attn/sink_share"),),
    )

    def __init__(self, probe_windows: int | None = None) -> None:
        super().__init__()
        self.probe_windows = probe_windows
        self._q: torch.Tensor | None = None
        self._shares: dict[int, torch.Tensor] = {}

    def register(self, model: nn.Module) -> None:
        self.hooks.register(model, "blocks.*.attn.hook_q", self._on_q)
        self.hooks.register(model, "blocks.*.attn.hook_k", self._on_k)

    def _on_q(self, q: torch.Tensor, layer: int) -> None:
        self._q = q

    def _on_k(self, k: torch.Tensor, layer: int) -> None:
        self._shares[layer] = sink_share(causal_scores(self._q, k))
        self._q = None  # one layer's scores at a time

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if trainer.sanity_checking or not hasattr(datamodule, "probe_batch"):
            return
        model, was_training = pl_module.model, pl_module.model.training
        model.eval()
        self.hooks.armed = "probe"
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                model(datamodule.probe_batch(self.probe_windows).to(pl_module.device))
        finally:
            self.hooks.armed = None
            model.train(was_training)
        self.computations += 1
        shares = torch.stack([self._shares.pop(i) for i in sorted(self._shares)])
        publish(trainer, per_layer("attn/sink_share", shares))
