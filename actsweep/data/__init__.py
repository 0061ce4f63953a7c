"""Data, one stage per module: sources (corpora) → tokenizers → token cache → windows (pure functions
of seed, step and rank) → `TextDataModule`, the LightningDataModule that serves them.

Imports only the bottom layer (`actsweep.errors`, `actsweep.io`); never the model or anything above.
"""

from actsweep.data.module import TextDataModule

__all__ = ["TextDataModule"]
