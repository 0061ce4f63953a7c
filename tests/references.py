"""Independent reference computations for the tests: fp64, written out as loops or from first
principles, sharing no code with `actsweep.stats.metrics`."""

from __future__ import annotations

import math

import numpy as np
import torch


def reference_entropy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Materialised causal softmax attention in fp64, -sum p log p over p > 0, per (batch, head, query)."""
    t, d = q.shape[-2], q.shape[-1]
    mask = torch.full((t, t), float("-inf")).triu(1)
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(d) + mask, dim=-1)
    plogp = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    return -plogp.sum(-1)


def loop_scores(q: torch.Tensor, k: torch.Tensor) -> list:
    """Causal attention logits as nested lists, one dot product at a time; None above the diagonal."""
    B, H, T, d = q.shape
    q, k = q.double().tolist(), k.double().tolist()
    return [[[[sum(a * b for a, b in zip(q[b_][h][i], k[b_][h][j])) / math.sqrt(d) if j <= i else None
               for j in range(T)] for i in range(T)] for h in range(H)] for b_ in range(B)]


def loop_row_entropy(row: list) -> float:
    """-sum p log p of softmax over the non-None logits of one query row, in Python floats."""
    logits = [s for s in row if s is not None]
    top = max(logits)
    weights = [math.exp(s - top) for s in logits]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0)


def loop_bands(values: list[float], top: float) -> list[float]:
    """Share of values per quarter of [0, top], the last quarter closed (and everything above it)."""
    counts = [0, 0, 0, 0]
    for v in values:
        band = next((b for b in range(3) if v < (b + 1) * top / 4), 3)
        counts[band] += 1
    return [c / len(values) for c in counts]


def expected_offsets(seed: int, step: int, n_tokens: int, block_size: int, n: int) -> np.ndarray:
    """The spec's window draw, written out independently of TextDataModule."""
    rng = np.random.Generator(np.random.PCG64([seed, step]))
    shift = rng.integers(0, block_size + 1)
    chunks = rng.choice((n_tokens - shift) // (block_size + 1), size=n, replace=False)
    return shift + chunks * (block_size + 1)


def reference_chunk_starts(tokens: np.ndarray, eot: int, length: int) -> list[int]:
    """The spec written as a plain loop: whole chunks per document, remainder and eot left out."""
    starts, doc_start = [], 0
    for i, token in enumerate([*tokens.tolist(), eot]):  # an unterminated tail is the last document
        if token == eot:
            starts += range(doc_start, i - length + 1, length)
            doc_start = i + 1
    return starts


def stream(doc_lengths: list[int], eot: int, rng: np.random.Generator, terminated: bool = True) -> np.ndarray:
    docs = [[*rng.integers(1, 50, size=n).tolist(), eot] for n in doc_lengths]
    flat = [t for doc in docs for t in doc]
    return np.array(flat if terminated else flat[:-1], dtype=np.uint16)
