"""Documents read on demand: a corpus too large for Python lists (ReLU's Revival's training split is
606,720 files, ~2.1B tokens) stays in its memory-mapped Arrow files, and only the batch being
tokenized is ever held as Python strings.

A :class:`Documents` is a view: an index array over a ``take`` function that reads a batch of
documents by position. Shuffling, splitting and capping make new views (integer arrays, 8 bytes a
document); iterating reads ``BATCH`` documents at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

BATCH = 1000  # documents read (and held as strings) at a time

Take = Callable[[np.ndarray], list[str]]


class Documents(Sequence[str]):
    """Documents ``take(index[i])`` for i in order; slices and :meth:`permuted` are views."""

    def __init__(self, take: Take, index: np.ndarray) -> None:
        self.take, self.index = take, np.asarray(index, dtype=np.int64)

    @classmethod
    def over(cls, take: Take, n: int) -> Documents:
        return cls(take, np.arange(n, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item):  # type: ignore[override]
        if isinstance(item, slice):
            return Documents(self.take, self.index[item])
        return self.take(self.index[[item]])[0]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), BATCH):
            yield from self.take(self.index[start:start + BATCH])

    def permuted(self, order: np.ndarray) -> Documents:
        """The documents in ``order`` (positions in this view)."""
        return Documents(self.take, self.index[order])

    def mapped(self, fn: Callable[[str], str]) -> Documents:
        """The same documents, each passed through ``fn`` when read."""
        take = self.take
        return Documents(lambda index: [fn(text) for text in take(index)], self.index)

    # Lists: only a character split of the text (`split_by: char`) joins documents with others.
    def __add__(self, other: Sequence[str]) -> list[str]:
        return [*self, *other]

    def __radd__(self, other: Sequence[str]) -> list[str]:
        return [*other, *self]


def arrow_documents(dataset, column: str) -> Documents:
    """The ``column`` of a Hugging Face ``datasets.Dataset`` (memory-mapped Arrow) as :class:`Documents`."""
    table = dataset.select_columns([column])
    return Documents.over(lambda index: table[index.tolist()][column], len(table))
