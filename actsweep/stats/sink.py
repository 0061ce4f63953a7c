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

from actsweep.declarations import LAYER, Chart, Column, Declaration
from actsweep.stats.common import per_layer, publish
from actsweep.stats.probe import ProbeStatistic


def sink_share(s: torch.Tensor) -> torch.Tensor:
    """The mean attention probability on key 0 of causal scores `s` (B, H, T, T), over batch, heads
    and the queries 1..T-1."""
    return torch.softmax(s, dim=-1)[..., 1:, 0].mean()


class AttentionSink(ProbeStatistic):
    """The attention mass on the first token, per layer, at each validation end (in the probe pass it
    shares with `AttentionEntropy`).

    Args:
        probe_windows: windows asked of `probe_batch(n)` (None: the data module's default).
    """

    declaration = Declaration(
        charts=(Chart("attention sinks", "attention mass on the first token per layer", (rf"attn/sink_share/{LAYER}",)),),
        columns=(Column("sink_pct", "attn/sink_share", "sink share %", 1, place=95, scale=100),),
        hparams=((130, "attn/sink_share"),),
    )
    reducers = {"sink_share": sink_share}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        found = None if trainer.sanity_checking else self.probe(trainer, pl_module)
        if found is not None:
            publish(trainer, per_layer("attn/sink_share", found[0]["sink_share"]))
