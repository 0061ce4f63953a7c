"""``TextDataModule``: cached token streams served as deterministic windows.

Training windows are a pure function of (seed, step, rank) — no sampler state to checkpoint — so a
resumed run continues exactly and an N-process run sees exactly the single-process global batch,
split N ways. Validation uses a fixed set of evenly spread windows. Windows are either drawn
anywhere in the flat stream (``random``) or are whole-document aligned chunks (``document``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from actsweep.data import cache, windows
from actsweep.data.loaders import Batch, FixedBatches, FreshBatches, TrainWindows
from actsweep.data.windows import SAMPLINGS, VAL_SAMPLINGS, Sampling, ValSampling
from actsweep.data.sources import SPLITS, STDLIB, Corpus, SplitBy
from actsweep.data.tokenizers import HF_PREFIX, Tokenizer, check_tokenizer, get_tokenizer
from actsweep.errors import ConfigError, check_choice

WINDOWS = ("random", "document")
WindowKind = Literal[WINDOWS]


class TextDataModule(L.LightningDataModule):
    """Tokenized text corpus (see ``actsweep.sources`` for ``source`` forms) for next-token training.

    Args:
        source: ``python-stdlib``, a local .txt/.jsonl/.parquet file, directory or glob, or a hub name.
        tokenizer: ``gpt2``, ``char``, or ``hf:NAME`` (a Hugging Face hub tokenizer, e.g.
            ``hf:huggingface-course/code-search-net-tokenizer``) / ``hf:path/to/tokenizer.json``.
        block_size: tokens per input window (each window reads ``block_size + 1`` tokens).
        batch_size: windows per training step *per process*.
        val_batch_size: windows per validation batch (default ``batch_size``).
        val_windows: validation windows, evenly spread over the val split (fewer if fewer fit);
            ``null``: every window of the val split (ReLU's Revival evaluated on all its chunks).
        probe_windows: validation windows in ``probe_batch()``.
        seed: seed of the training windows.
        windows: ``random`` — windows anywhere in the flat token stream, across document boundaries
            (the blog's nanoGPT sampling); ``document`` — aligned ``block_size + 1``-token chunks inside
            each document, partial remainder dropped (ReLU's Revival's per-document chunks; needs a
            tokenizer with an end-of-text token, e.g. gpt2). Training draws distinct windows per step
            either way; validation spreads ``val_windows`` evenly over the val split's windows.
        sampling: ``step`` — each step draws its windows afresh (with replacement across steps);
            ``epoch`` — every window once per epoch, in a permuted order drawn from the seed (one
            epoch over shuffled chunks, as ReLU's Revival's Trainer); ``random`` windows then sit on
            a fixed non-overlapping grid; ``uniform`` — nanoGPT's ``get_batch``: every start (or
            chunk) equally likely, with replacement, so windows may overlap within a step (the blog's
            code). All are pure functions of (seed, step, rank).
        text_column: column of .jsonl/.parquet/hub sources (default ``text`` / the dataset's own).
        separator: string ending each document in .txt files.
        val_source: source of the validation documents (default: split off ``source``).
        val_fraction: share of documents (or characters) held out for validation.
        split_by: ``document`` (shuffled, seed 0) or ``char`` (the blog's 90/10 cut of the text).
        max_documents: cap on training documents; max_val_documents: cap on validation documents.
        test_fraction: share of the training documents (of the text, with ``split_by: char``) held
            out as the test split that ``actsweep test`` evaluates; set it when training, so the
            test windows were never trained on (0: no test split).
        test_source: source of the test documents instead (a hub dataset's ``test`` split, or files).
        cache_dir: token cache directory (default ``$ACTSWEEP_CACHE_DIR`` or ``~/.cache/actsweep``).
        pin_memory: pin host batches (only where CUDA is available).
        val_sampling: ``fixed`` — every validation evaluates the same ``val_windows`` windows, evenly
            spread (paired across runs and steps, no sampling noise between evaluations); ``fresh`` —
            each validation draws ``val_windows`` windows anew, uniformly with replacement, as nanoGPT's
            ``estimate_loss`` (the blog's code: 20 fresh batches of 32), from (seed, step).
    """

    def __init__(
        self,
        source: str = STDLIB,
        tokenizer: str = "gpt2",
        block_size: int = 128,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        val_windows: int | None = 64,
        probe_windows: int = 8,
        seed: int = 1337,
        windows: WindowKind = "random",
        sampling: Sampling = "step",
        text_column: str | None = None,
        separator: str = "<|endoftext|>",
        val_source: str | None = None,
        val_fraction: float = 0.1,
        split_by: SplitBy = "document",
        max_documents: int | None = None,
        max_val_documents: int | None = None,
        test_fraction: float = 0.0,
        test_source: str | None = None,
        cache_dir: str | None = None,
        pin_memory: bool = True,
        val_sampling: ValSampling = "fixed",
    ) -> None:
        super().__init__()
        check_tokenizer(tokenizer)  # before anything is read
        for name, value in (("block_size", block_size), ("batch_size", batch_size), ("val_batch_size", val_batch_size),
                            ("val_windows", val_windows), ("probe_windows", probe_windows),
                            ("max_documents", max_documents), ("max_val_documents", max_val_documents)):
            if value is not None and value < 1:  # None: the default that the docstring names
                raise ConfigError(f"{name} must be >= 1, got {value}")
        check_choice("windows", windows, WINDOWS)
        check_choice("val_sampling", val_sampling, VAL_SAMPLINGS)
        if val_sampling == "fresh" and val_windows is None:
            raise ConfigError("val_sampling fresh draws val_windows windows at each validation; give a number, not null")
        check_choice("sampling", sampling, SAMPLINGS)
        self.save_hyperparameters()
        self.corpus = Corpus(source=source, text_column=text_column, separator=separator,
                             val_source=val_source, val_fraction=val_fraction, split_by=split_by,
                             max_documents=max_documents, max_val_documents=max_val_documents,
                             test_fraction=test_fraction, test_source=test_source)
        self.tokenizer_name = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.val_windows = val_windows
        self.probe_windows = probe_windows
        self.seed = seed
        self.windows = windows
        self.sampling = sampling
        self.val_sampling = val_sampling
        self.cache_dir = cache_dir
        self.pin_memory = pin_memory
        self._arrays: dict[str, cache.TokenArray] | None = None
        self._train: np.ndarray | None = None
        self._val: np.ndarray | None = None
        self._test: np.ndarray | None = None
        self._trained_on: str | None = None  # the training corpus of a loaded checkpoint
        self._chunks: dict[str, np.ndarray] = {}  # document-mode window starts per split, on first use

    # -- tokens ----------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer; a char vocabulary comes from the cache metadata (built on first use)."""
        if self.tokenizer_name == "char":
            return get_tokenizer(**self._token_arrays()["train"].meta["tokenizer"])
        return get_tokenizer(self.tokenizer_name)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.n_vocab

    def model_vocab_size(self) -> int:
        """`vocab_size`, once the windows are known to fit the corpus: the CLI builds the model from it
        before the trainer, so an absurd `block_size` (1e8: a 12.8 GB position table) is refused before
        that allocation, and every size error before Lightning says anything."""
        vocab_size = self.vocab_size  # a char vocabulary reads the corpus: its own errors come first
        most = self.corpus.max_tokens()
        if most is not None and self.block_size + 1 > most:
            raise ConfigError(f"block_size {self.block_size} is longer than the whole corpus {self.corpus.source!r} "
                              f"(at most {most} tokens); lower --data.block_size or use a larger corpus")
        self.prepare_data()  # one process' windows; Lightning checks again with the trainer's processes
        return vocab_size

    def _cache_name(self, split: str) -> str:
        """Readable and unique: source stem, tokenizer, split, hash of every corpus option (and of the
        tokenizer file, for ``hf:`` tokenizers)."""
        identity = self.corpus.describe()
        if self.tokenizer_name.startswith(HF_PREFIX):
            identity += " tokenizer:" + get_tokenizer(self.tokenizer_name).sha256
        key = hashlib.sha256(identity.encode()).hexdigest()[:12]
        stem = re.sub(r"[^\w.-]+", "_", self.corpus.source.rstrip("/").split("/")[-1])[:40]
        tokenizer = re.sub(r"[^\w.-]+", "_", self.tokenizer_name.rstrip("/").split("/")[-1])[:40]
        return f"{stem}-{tokenizer}-{split}-{key}"

    def _token_arrays(self) -> dict[str, cache.TokenArray]:
        """Train and val caches, loading (and tokenizing) the corpus at most once, only if needed."""
        if self._arrays is None:
            documents = functools.cache(self.corpus.load_splits)
            tokenizer = functools.cache(lambda: self._new_tokenizer(documents()))
            fingerprint = self.corpus.fingerprint()
            self._arrays = {
                split: cache.load_or_build(
                    self._cache_name(split), fingerprint,
                    functools.partial(self._split_documents, documents, split), tokenizer,
                    meta={"source": self.corpus.describe(), "split": split}, cache_dir=self.cache_dir,
                )
                for split in SPLITS + (("test",) if self.corpus.has_test else ())
            }
        return self._arrays

    def _new_tokenizer(self, documents: dict[str, list[str]]) -> Tokenizer:
        if self.tokenizer_name != "char":  # fixed vocabularies: no pass over the corpus
            return get_tokenizer(self.tokenizer_name)
        return get_tokenizer(self.tokenizer_name, texts=[*documents["train"], *documents["val"], *documents["test"]])

    def _split_documents(self, documents: Callable[[], dict[str, list[str]]], split: str) -> list[str]:
        """`split`'s documents, once every split has some: an empty one is refused before the first
        cache is written."""
        for name in SPLITS + (("test",) if self.corpus.has_test else ()):
            if not documents()[name]:
                raise ConfigError(
                    f"the {name} split of {self.corpus.source!r} has no documents; check the path / "
                    "--data.text_column / --data.separator, or for a single-document corpus use "
                    "--data.split_by char (or give --data.val_source)"
                )
        return documents()[split]

    def prepare_data(self) -> None:
        """Tokenize and cache train and val (once per machine; later runs only verify), and check that
        the windows fit: Lightning calls this before it creates the run's log folder, so a size error
        leaves no empty run behind."""
        self._token_arrays()
        self._check_sizes()

    def setup(self, stage: str | None = None) -> None:
        arrays = self._token_arrays()
        self._train = np.asarray(arrays["train"].tokens)
        self._val = np.asarray(arrays["val"].tokens)
        if "test" in arrays:
            self._test = np.asarray(arrays["test"].tokens)
        self._check_sizes()

    def _check_sizes(self) -> None:
        window = self.block_size + 1
        evaluated = ("val", "test") if self.corpus.has_test else ("val",)
        for split in ("train", *evaluated):
            tokens = self._tokens(split)
            if len(tokens) < window:
                raise ConfigError(
                    f"the {split} split has {len(tokens)} tokens, fewer than block_size + 1 = {window}; "
                    f"lower --data.block_size or use a larger corpus / --data.{'test' if split == 'test' else 'val'}_fraction"
                )
        world_size = self._position()[2]
        if self.windows == "document":
            for split in evaluated:
                if not len(self._chunk_starts(split)):
                    raise ConfigError(
                        f"the {split} split has no document of at least block_size + 1 = {window} tokens, so "
                        f"no document windows; lower --data.block_size or use more {split} documents"
                    )
            if len(self._chunk_starts("train")) < self.batch_size * world_size:
                raise self._capacity_error(world_size)
        elif len(self._tokens("train")) < self._train_tokens_needed(world_size):
            raise self._capacity_error(world_size)

    def _train_tokens_needed(self, world_size: int) -> int:
        """Tokens for a global batch of distinct windows whatever the shift (up to block_size)."""
        return self.batch_size * world_size * (self.block_size + 1) + self.block_size

    def _capacity_error(self, world_size: int) -> ConfigError:
        if self.windows == "document":
            return ConfigError(
                f"the train split has {len(self._chunk_starts('train'))} whole-document chunks of "
                f"{self.block_size + 1} tokens; a global batch needs {self.batch_size * world_size} distinct ones. "
                "Lower --data.batch_size or --data.block_size, or use a larger corpus"
            )
        return ConfigError(
            f"the train split has {len(self._tokens('train'))} tokens; {self.batch_size * world_size} "
            f"distinct windows of {self.block_size + 1} tokens need {self._train_tokens_needed(world_size)}. "
            "Lower --data.batch_size or --data.block_size, or use a larger corpus"
        )

    def _tokens(self, split: str) -> np.ndarray:
        if self._train is None or self._val is None:
            self.setup()
        return {"train": self._train, "val": self._val, "test": self._test}[split]  # type: ignore[return-value]

    def _chunk_starts(self, split: str) -> np.ndarray:
        """Document-mode window starts of ``split``: one pass over its tokens, on first use."""
        if split not in self._chunks:
            eot = self.tokenizer.eot
            if eot is None:
                raise ConfigError(
                    f"--data.windows document needs a tokenizer with an end-of-text token, such as gpt2, "
                    f"to find document boundaries; {self.tokenizer_name!r} has none (use --data.windows random)"
                )
            self._chunks[split] = windows.document_chunk_starts(self._tokens(split), eot, self.block_size + 1)
        return self._chunks[split]

    def _position(self) -> tuple[int, int, int]:
        """(first batch index, rank, world size) from the attached trainer, else (0, 0, 1).

        Batch index = optimizer steps x accumulation, so a resumed run continues exactly.
        """
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        return trainer.global_step * trainer.accumulate_grad_batches, trainer.global_rank, trainer.world_size

    # -- windows ---------------------------------------------------------------------------------

    def _gather(self, tokens: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
        rows = tokens[starts[:, None] + np.arange(length)]
        return torch.from_numpy(rows.astype(np.int64))

    def train_batch(self, step: int, rank: int = 0, world_size: int = 1) -> Batch:
        """Batch ``step`` of process ``rank``: rows ``rank::world_size`` of the global batch.

        The global batch (``batch_size * world_size`` windows) is drawn from ``PCG64([seed, step])``.
        ``random``: one shift in ``[0, block_size]`` and distinct chunks among the non-overlapping
        ``block_size + 1``-token chunks after it, so windows never overlap. ``document``: distinct
        whole-document chunks (see :func:`actsweep.data.windows.document_chunk_starts`).
        """
        tokens, window = self._tokens("train"), self.block_size + 1
        if self.windows == "document":
            starts = windows.document_window_starts(self.seed, step, self._chunk_starts("train"),
                                                    self.batch_size, rank, world_size, self.sampling)
        else:
            starts = windows.random_window_starts(self.seed, step, len(tokens), self.block_size,
                                                  self.batch_size, rank, world_size, self.sampling)
        rows = self._gather(tokens, starts, window)
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def train_windows(self) -> int:
        """How many distinct training windows one epoch visits (`sampling: epoch`): whole-document
        chunks, or the non-overlapping ``block_size + 1``-token grid of the stream."""
        if self.windows == "document":
            return len(self._chunk_starts("train"))
        return len(self._tokens("train")) // (self.block_size + 1)

    def val_starts(self, split: str = "val") -> np.ndarray:
        """Start offsets of all validation (or test) windows: evenly spread, non-overlapping, fixed.

        ``random``: spread over the split's stream; ``document``: spread over its whole-document chunks.
        """
        chunks = self._chunk_starts(split) if self.windows == "document" else None
        return windows.val_window_starts(self.val_windows, len(self._tokens(split)), self.block_size, chunks)

    def fresh_val_starts(self, step: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Process ``rank``'s share of the validation windows drawn for the evaluation at ``step``
        (``val_sampling: fresh``): any start of the val split, or any of its document chunks."""
        if self.windows == "document":
            chunks = self._chunk_starts("val")
            return chunks[windows.fresh_val_rows(self.seed, step, len(chunks), self.val_windows, rank, world_size)]
        n = len(self._tokens("val")) - self.block_size
        return windows.fresh_val_rows(self.seed, step, n, self.val_windows, rank, world_size)

    def val_batches(self, rank: int = 0, world_size: int = 1, split: str = "val",
                    starts: np.ndarray | None = None) -> list[Batch]:
        """Validation (or test) batches of process ``rank`` (windows ``rank::world_size``, no padding),
        or of the given ``starts`` (this process's share already)."""
        starts = self.val_starts(split)[rank::world_size] if starts is None else starts
        rows = self._gather(self._tokens(split), starts, self.block_size + 1)
        return [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in rows.split(self.val_batch_size)]

    def probe_batch(self, n: int | None = None) -> torch.Tensor:
        """Inputs of the first ``n`` (default ``probe_windows``) validation windows, (n, block_size)."""
        starts = self.val_starts()[: n or self.probe_windows]
        return self._gather(self._tokens("val"), starts, self.block_size)

    # -- loaders ---------------------------------------------------------------------------------

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        return DataLoader(dataset, batch_size=None, pin_memory=self.pin_memory and torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(TrainWindows(self))

    def val_dataloader(self) -> DataLoader:
        """This process' share of the fixed validation windows, gathered once per fit; with
        ``val_sampling: fresh``, windows drawn anew at each validation from its step."""
        _, rank, world_size = self._position()
        if self.val_sampling == "fresh":
            return self._loader(FreshBatches(self))
        return self._loader(FixedBatches(self.val_batches(rank, world_size)))

    def test_dataloader(self) -> DataLoader:
        """This process' share of the test windows: as many as validation has, from the test split."""
        self.check_test_split()
        self.check_trained_on(self._trained_on)
        _, rank, world_size = self._position()
        return self._loader(FixedBatches(self.val_batches(rank, world_size, split="test")))

    def check_trained_on(self, trained_on: str | None) -> None:
        """Refuse test windows a checkpoint trained on `trained_on` (its `training_corpus`) may have seen."""
        if trained_on is not None and trained_on != self.corpus.training_identity():
            raise ConfigError("the checkpoint was trained on a different split of the corpus, so these test "
                              "windows may have been trained on; test with the data options it was trained with "
                              "(its config.yaml), e.g. the same --data.test_fraction")

    def check_test_split(self) -> None:
        """Refuse to test without a test split (the CLI asks before it loads any weights)."""
        if not self.corpus.has_test:
            raise ConfigError("no test split: `actsweep test` never evaluates training or validation windows; "
                              "train with --data.test_fraction (held out of the training documents) or give "
                              "--data.test_source")

    def state_dict(self) -> dict[str, str]:
        """Saved in checkpoints: which documents were trained on, so a test can refuse to overlap them."""
        return {"training_corpus": self.corpus.training_identity()}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        self._trained_on = state_dict.get("training_corpus")
