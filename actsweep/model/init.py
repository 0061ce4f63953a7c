"""Weight initialisations by name (``--model.init``), applied to a built GPT (`model`, with its `cfg`)."""

from __future__ import annotations

import math
from typing import Callable, Literal

from torch import nn


def init_normal(model: nn.Module) -> None:
    """Every Linear weight N(0, init_std), embeddings N(0, embedding_init_std), biases zero."""
    cfg = model.cfg
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=cfg.init_std if cfg.embedding_init_std is None else cfg.embedding_init_std)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=cfg.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def init_gpt2(model: nn.Module) -> None:
    """`init_normal`, then GPT-2's residual projections (attention and FFN outputs) at init_std/sqrt(2·n_layer)."""
    init_normal(model)
    for block in model.blocks:
        for proj in (block.attn.out, block.mlp.out):
            nn.init.normal_(proj.weight, std=model.cfg.init_std / math.sqrt(2 * model.cfg.n_layer))


# Weight initialisations. ReLU's Revival built its blocks after HF's `post_init`, so they never got
# GPT-2's residual scaling ("normal"); the blog's code initialised Linears only (N(0, 0.02)) and left
# the embedding tables at torch's N(0, 1) ("normal" with embedding_init_std 1).
INITS: dict[str, Callable[[nn.Module], None]] = {"gpt2": init_gpt2, "normal": init_normal}
InitName = Literal[tuple(INITS)]
