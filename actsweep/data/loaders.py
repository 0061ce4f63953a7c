"""The data module's datasets: infinite training batches and validation batches, fixed or drawn
per evaluation. Iterable, so Lightning never wraps them in a DistributedSampler: each process reads
its own shard, chosen from the trainer's step and rank when iteration starts. `data` is the
`TextDataModule` (not imported: it imports this module)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainWindows(IterableDataset):
    """Infinite training batches starting at the trainer's current step (read when iteration starts)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __iter__(self) -> Iterator[Batch]:
        step, rank, world_size = self.data._position()
        while True:
            yield self.data.train_batch(step, rank, world_size)
            step += 1


class FixedBatches(IterableDataset):
    """Batches gathered once. Iterable, so Lightning never wraps them in a DistributedSampler: they
    are this process' shard already."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FreshBatches(IterableDataset):
    """Validation batches drawn when iteration starts, from the trainer's current step."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __iter__(self) -> Iterator[Batch]:
        step, rank, world_size = self.data._position()
        return iter(self.data.val_batches(starts=self.data.fresh_val_starts(step, rank, world_size)))

    def __len__(self) -> int:
        _, rank, world_size = self.data._position()
        return -(-len(range(rank, self.data.val_windows, world_size)) // self.data.val_batch_size)
