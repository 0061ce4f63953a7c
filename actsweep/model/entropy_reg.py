"""The entropy regulariser of entropy-guided attention (Jha & Reagen, arXiv 2501.03489).

A penalty on each head's attention entropy outside a tolerance band around a learnable per-head
threshold, added to the training loss. Defaults are the official code's choices
(Nandan91/entropy-guided-attention-llm, entropy_regularization.py):

- entropy of each attention row -Σ p·log(p + 1e-9) (line 54);
- maximum entropy log T, T the context size, for every row (lines 44-47): ``max_entropy="context"``;
  ``"causal"`` uses row t's own maximum log(t), what a causal row can reach;
- tolerance 0.2 · max entropy (line 11, 48); threshold = learnable weight[h] · max entropy (line 59);
- penalty (entropy − threshold)² where |entropy − threshold| > tolerance, else 0 (lines 62-71),
  summed over batch and query positions (line 72): ``reduce="sum"``; ``"mean"`` averages instead;
- averaged over heads (line 75), then over layers (line 79), times λ = 1e-5 (lines 11, 82);
- one threshold vector shared by every layer (usage_example.py:68-74 takes the first block's):
  ``thresholds="shared"``; ``"layer"`` gives each layer its own.

The code does not say how the thresholds start; ours start at `threshold_init` (0.5 of the maximum).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

ENTROPY_MAXIMA = ("context", "causal")
ENTROPY_REDUCTIONS = {"sum": torch.sum, "mean": torch.mean}
THRESHOLD_SCOPES = ("shared", "layer")
EntropyMax = Literal[ENTROPY_MAXIMA]
EntropyReduction = Literal[tuple(ENTROPY_REDUCTIONS)]
ThresholdScope = Literal[THRESHOLD_SCOPES]


def attention_with_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal softmax(q kᵀ / sqrt(d)) v written out (the "math" path), and the (B, H, T, T)
    probabilities before dropout: what the penalty needs and a fused kernel never materialises."""
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    return F.dropout(probs, drop) @ v, probs


def row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(B, H, T) entropy of each attention row as the official code computes it (with its 1e-9)."""
    return -torch.nansum(probs * torch.log(probs + 1e-9), dim=-1)


def max_entropy(kind: str, T: int, device: torch.device) -> torch.Tensor:
    """(T,) the maximum entropy each query row is compared against: log T for all, or log(t)."""
    if kind == "context":
        return torch.full((T,), math.log(T), device=device)
    return torch.log(torch.arange(1, T + 1, device=device, dtype=torch.float32))


class EntropyRegularizer(nn.Module):
    """Learnable per-head thresholds and the per-layer penalties of a model's attention probabilities."""

    def __init__(self, n_layer: int, n_head: int, coeff: float, tolerance: float, thresholds: str,
                 maximum: str, reduce: str, threshold_init: float) -> None:
        super().__init__()
        self.coeff, self.tolerance, self.maximum, self.reduce = coeff, tolerance, maximum, reduce
        n_vectors = 1 if thresholds == "shared" else n_layer
        # 1-D vectors: no weight decay under nanoGPT-style groups, whatever the scope
        self.thresholds = nn.ParameterList(nn.Parameter(torch.full((n_head,), threshold_init)) for _ in range(n_vectors))

    def layer_penalty(self, probs: torch.Tensor, layer: int) -> torch.Tensor:
        """Penalty of one layer's (B, H, T, T) attention probabilities, averaged over heads (before λ)."""
        weights = self.thresholds[layer % len(self.thresholds)]
        top = max_entropy(self.maximum, probs.shape[-1], probs.device)  # (T,)
        deviation = row_entropy(probs.float()) - weights[:, None] * top  # (B, H, T)
        outside = torch.where(deviation.abs() > self.tolerance * top, deviation, torch.zeros_like(deviation))
        per_head = ENTROPY_REDUCTIONS[self.reduce](outside.square().transpose(0, 1).flatten(1), dim=1)
        return per_head.mean()

    def forward(self, probs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(λ · mean over layers, (n_layer,) per-layer penalties before λ) for each layer's probabilities."""
        layers = torch.stack([self.layer_penalty(p, i) for i, p in enumerate(probs)])
        return self.coeff * layers.mean(), layers.detach()
