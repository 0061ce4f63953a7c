"""Window arithmetic: where each training and validation window starts, as pure functions.

Every function takes plain numbers and arrays (no data module, no trainer), so a notebook can ask
"which windows did rank 1 see at step 40?" and the answer is the one training used: positions are a
pure function of (seed, step, rank), which is what makes resume and multi-process runs exact.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from actsweep.errors import ConfigError

EOT_SCAN_BLOCK = 1 << 26  # tokens compared with eot at a time: bounds the scan's memory (64 MB of bools)
SAMPLINGS = ("step", "epoch", "uniform")
Sampling = Literal[SAMPLINGS]
EPOCH_STREAM = 1  # keeps epoch permutations apart from the per-step generators
VAL_STREAM = 2  # keeps fresh validation draws apart from the training windows of the same step
VAL_SAMPLINGS = ("fixed", "fresh")
ValSampling = Literal[VAL_SAMPLINGS]


def document_chunk_starts(tokens: np.ndarray, eot: int, length: int) -> np.ndarray:
    """Start offsets (int64, in stream order) of every whole ``length``-token chunk inside a document.

    This is how Hugging Face's codeparrot pipeline (ReLU's Revival) cut its data: each document is
    split into chunks at ``doc_start + k * length`` and its partial remainder is dropped, so chunks
    never cross documents. Documents are the runs between ``eot`` tokens; the eot belongs to no chunk,
    and text after the last eot (a stream that is not terminated) counts as the last document.
    Vectorised, scanning ``tokens`` (e.g. a memmap) block by block: no Python loop over documents.
    """
    eots = [np.flatnonzero(tokens[i:i + EOT_SCAN_BLOCK] == eot) + i
            for i in range(0, len(tokens), EOT_SCAN_BLOCK)]
    ends = np.concatenate([*eots, [len(tokens)]]).astype(np.int64)  # one past each document
    doc_starts = np.concatenate([[0], ends[:-1] + 1])
    counts = (ends - doc_starts) // length
    # Chunk j of the whole list, in document d: doc_starts[d] + (j - chunks before d) * length.
    before = np.cumsum(counts) - counts
    return np.repeat(doc_starts - before * length, counts) + np.arange(counts.sum(), dtype=np.int64) * length


def evenly_spread(n: int, last: int) -> np.ndarray:
    """``n`` integers evenly spread from 0 to ``last`` (both ends included when n > 1)."""
    return np.arange(n, dtype=np.int64) * last // max(n - 1, 1)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of global batch ``step``: the same on every rank, independent of any other step."""
    return np.random.Generator(np.random.PCG64([seed, step]))


def rank_rows(rng: np.random.Generator, n: int, batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """Rows ``rank::world_size`` of ``batch_size * world_size`` distinct indices in ``[0, n)``: every
    process draws the same global batch, so the N shards together are the single-process batch."""
    if n < batch_size * world_size:
        raise ConfigError(f"{n} distinct windows cannot fill a global batch of {batch_size * world_size}")
    return rng.choice(n, size=batch_size * world_size, replace=False)[rank::world_size]


def uniform_rows(seed: int, step: int, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Rows ``rank::world_size`` of ``batch_size * world_size`` indices drawn uniformly from ``[0, n)``
    *with* replacement, as nanoGPT's ``get_batch`` (``torch.randint(len(data) - block_size, (B,))``):
    windows may overlap or repeat within a step. The same global batch on every rank."""
    if n < 1:
        raise ConfigError("no training window fits: the training split is shorter than block_size + 1 tokens")
    return step_rng(seed, step).integers(0, n, size=batch_size * world_size)[rank::world_size]


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` windows: a permutation drawn from (seed, epoch)
    (kept for the next call: drawing 16M indices takes a while)."""
    order = np.random.Generator(np.random.PCG64([seed, EPOCH_STREAM, epoch])).permutation(n)
    return order.astype(np.int32 if n < 2**31 else np.int64)


def epoch_rows(seed: int, step: int, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Rows ``rank::world_size`` of global batch ``step`` when every one of ``n`` windows is visited
    exactly once per epoch (ReLU's Revival's one epoch over shuffled chunks). The global batch is
    the same on every rank; an epoch holds ``n // global batch`` batches (the remainder of each
    permutation is left out, so no batch straddles two epochs) and the next epoch is a new permutation."""
    global_batch = batch_size * world_size
    per_epoch = n // global_batch
    if per_epoch < 1:
        raise ConfigError(f"{n} windows cannot fill a global batch of {global_batch}")
    epoch, index = divmod(step, per_epoch)
    return epoch_order(seed, epoch, n)[index * global_batch:(index + 1) * global_batch][rank::world_size]


def random_window_starts(seed: int, step: int, n_tokens: int, block_size: int, batch_size: int,
                         rank: int = 0, world_size: int = 1, sampling: str = "step") -> np.ndarray:
    """Starts of rank ``rank``'s training windows (``block_size + 1`` tokens each) at ``step``, anywhere
    in a stream of ``n_tokens``. ``step`` sampling: one shift in ``[0, block_size]``, then distinct
    non-overlapping chunks after it, so no two windows of a step overlap. ``epoch``: the
    non-overlapping chunks from offset 0, each once per epoch (:func:`epoch_rows`). ``uniform``: any
    start, with replacement (:func:`uniform_rows`, nanoGPT's sampling)."""
    window = block_size + 1
    if sampling == "epoch":
        return epoch_rows(seed, step, n_tokens // window, batch_size, rank, world_size).astype(np.int64) * window
    if sampling == "uniform":
        return uniform_rows(seed, step, n_tokens - window + 1, batch_size, rank, world_size)
    rng = step_rng(seed, step)
    shift = int(rng.integers(0, window))
    return shift + rank_rows(rng, (n_tokens - shift) // window, batch_size, rank, world_size) * window


def document_window_starts(seed: int, step: int, chunk_starts: np.ndarray, batch_size: int,
                           rank: int = 0, world_size: int = 1, sampling: str = "step") -> np.ndarray:
    """Starts of rank ``rank``'s training windows at ``step``: distinct whole-document chunks, drawn
    afresh each step (``step``: with replacement across steps) or each once per epoch (``epoch``)."""
    if sampling == "epoch":
        return chunk_starts[epoch_rows(seed, step, len(chunk_starts), batch_size, rank, world_size)]
    if sampling == "uniform":
        return chunk_starts[uniform_rows(seed, step, len(chunk_starts), batch_size, rank, world_size)]
    rng = step_rng(seed, step)
    return chunk_starts[rank_rows(rng, len(chunk_starts), batch_size, rank, world_size)]


def fresh_val_rows(seed: int, step: int, n: int, count: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Rows ``rank::world_size`` of ``count`` indices drawn uniformly from ``[0, n)`` with replacement
    for the evaluation at ``step`` (``val_sampling: fresh``: nanoGPT's ``estimate_loss``, which averages
    fresh ``get_batch`` draws at each evaluation); the same draw on every rank, a pure function of
    (seed, step), so a resumed run evaluates the same windows."""
    if n < 1:
        raise ConfigError("no validation window fits: the val split is shorter than block_size + 1 tokens")
    return np.random.Generator(np.random.PCG64([seed, VAL_STREAM, step])).integers(0, n, size=count)[rank::world_size]


def val_window_starts(n_windows: int | None, n_tokens: int, block_size: int,
                      chunk_starts: np.ndarray | None = None) -> np.ndarray:
    """Starts of the fixed validation windows: ``n_windows`` (None: every one) evenly spread over a
    stream of ``n_tokens`` (non-overlapping), or over ``chunk_starts`` (document windows) when given."""
    window = block_size + 1
    if chunk_starts is not None:
        count = len(chunk_starts) if n_windows is None else min(n_windows, len(chunk_starts))
        return chunk_starts[evenly_spread(count, len(chunk_starts) - 1)]
    if n_windows is None:
        return np.arange(n_tokens // window, dtype=np.int64) * window
    return evenly_spread(min(n_windows, n_tokens // window), n_tokens - window)
