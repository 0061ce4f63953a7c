"""Token cache: each (corpus, tokenizer, split) is tokenized once into a flat binary array.

Layout: ``<name>.bin`` (raw uint16/uint32 tokens) and ``<name>.json`` (metadata). Both are written
to pid-named temporary files in the same directory, fsync'd and renamed; the metadata goes LAST
(and any old one is removed first), so an interrupted build never leaves a cache a later run
trusts, and the next build deletes the temporary files a killed one left. On load the metadata,
fingerprint, size, sha256 (sampled for big caches, see `_check`) and the vocabulary range are
checked; stale or damaged caches are rebuilt.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from actsweep.data.tokenizers import Tokenizer, get_tokenizer
# Larger caches: 16 MB read at spread offsets (`sample_sha256`), plus the stamp.
from actsweep.io import SAMPLE_BYTES, SAMPLES, remove_orphans, sha256_file, write_atomic
from actsweep.io import sample_sha256 as _sample_sha256
from actsweep.errors import ActSweepError, ConfigError

FORMAT_VERSION = 1
CACHE_ENV = "ACTSWEEP_CACHE_DIR"
CHUNK_DOCS = 1000  # documents per encode_batch call (tiktoken spreads each call over all cores)
FULL_HASH_BYTES = 256 << 20  # caches up to this size are fully hashed on every load (~0.3 s)


class CacheDirError(ActSweepError, OSError):
    """The cache directory cannot be created or written."""


@dataclass(frozen=True)
class TokenArray:
    """A verified cache: read-only memmap of tokens, its metadata and the ``.bin`` path."""

    tokens: np.memmap
    meta: dict[str, Any]
    path: Path

    def __len__(self) -> int:
        return len(self.tokens)


def default_cache_dir() -> Path:
    """``$ACTSWEEP_CACHE_DIR`` or ``~/.cache/actsweep``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "actsweep").expanduser()


def token_dtype(n_vocab: int) -> np.dtype:
    """Smallest unsigned dtype holding every id (uint16 halves the size of GPT-2 caches)."""
    return np.dtype(np.uint16 if n_vocab <= np.iinfo(np.uint16).max + 1 else np.uint32)


def _paths(cache_dir: Path, name: str) -> tuple[Path, Path]:
    return cache_dir / f"{name}.bin", cache_dir / f"{name}.json"


def load(name: str, fingerprint: str, cache_dir: str | Path | None = None) -> TokenArray | None:
    """The cache ``name`` if present and verified, else None (warning when it was stale or damaged)."""
    bin_path, meta_path = _paths(Path(cache_dir or default_cache_dir()), name)
    if not meta_path.exists():
        return None
    problem, meta = _check(bin_path, meta_path, fingerprint)
    if problem:
        warnings.warn(f"token cache {bin_path} is {problem}; rebuilding it", stacklevel=2)
        return None
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["count"],))
    return TokenArray(tokens=tokens, meta=meta, path=bin_path)


def _check(bin_path: Path, meta_path: Path, fingerprint: str) -> tuple[str | None, dict[str, Any]]:
    """(reason the cache cannot be trusted or None, its metadata)."""
    try:
        meta = json.loads(meta_path.read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        expected_bytes, sha256 = meta["count"] * itemsize, meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"damaged (unreadable metadata: {err})", {}
    if meta.get("format") != FORMAT_VERSION or meta.get("fingerprint") != fingerprint:
        return "stale (its source or format changed)", meta
    size = bin_path.stat().st_size if bin_path.exists() else -1
    if size != expected_bytes:
        return f"damaged (size {size} bytes, expected {expected_bytes})", meta
    # Hashing a multi-GB cache in every process costs seconds. A small cache is always hashed in
    # full; a large one whose size and modification time are those recorded at build pays only for
    # the sampled blocks (bytes changed under the same stamp are found where a block falls).
    full = size <= FULL_HASH_BYTES or meta.get("stamp") != _stamp(bin_path) or "sample_sha256" not in meta
    intact = sha256_file(bin_path) == sha256 if full else _sample_sha256(bin_path) == meta["sample_sha256"]
    if not intact:
        return "damaged (sha256 mismatch)", meta
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["count"],))
    top = int(tokens.max() if full else _sampled(tokens).max())
    n_vocab = get_tokenizer(**meta["tokenizer"]).n_vocab
    if top >= n_vocab:
        return f"damaged (token id {top} outside the vocabulary of {n_vocab})", meta
    return None, meta


def _sampled(tokens: np.ndarray) -> np.ndarray:
    """The tokens of the sampled blocks (see `_sample_sha256`), for the vocabulary check."""
    per_block = max(1, SAMPLE_BYTES // tokens.itemsize)
    starts = np.linspace(0, max(0, len(tokens) - per_block), SAMPLES).astype(np.int64)
    return tokens[(starts[:, None] + np.arange(min(per_block, len(tokens)))).ravel()]


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def build(name: str, documents: Sequence[str], tokenizer: Tokenizer, meta: dict[str, Any],
          cache_dir: str | Path | None = None) -> TokenArray:
    """Tokenize ``documents`` into cache ``name``; ``meta`` (source, fingerprint, split, ...) is
    stored alongside the token count, dtype, tokenizer and checksum."""
    directory = _writable_dir(Path(cache_dir or default_cache_dir()))
    bin_path, meta_path = _paths(directory, name)
    meta_path.unlink(missing_ok=True)  # an old .json must never vouch for a new .bin
    remove_orphans(bin_path)  # temporary files of builds that were killed
    dtype = token_dtype(tokenizer.n_vocab)
    tmp = bin_path.with_name(f"{bin_path.name}.tmp-{os.getpid()}")
    try:
        count, sha256 = _write_tokens(tmp, documents, tokenizer, dtype, name)
        if count == 0:
            raise ConfigError(
                f"corpus {meta.get('source', name)!r} produced no tokens ({len(documents)} documents); "
                "check the path / text column / separator"
            )
        os.replace(tmp, bin_path)
    finally:
        tmp.unlink(missing_ok=True)
    full_meta = {**meta, "format": FORMAT_VERSION, "count": count, "dtype": dtype.name,
                 "tokenizer": tokenizer.to_meta(), "sha256": sha256, "n_documents": len(documents)}
    full_meta.update(stamp=_stamp(bin_path), sample_sha256=_sample_sha256(bin_path))
    write_atomic(meta_path, json.dumps(full_meta, indent=1).encode())
    return TokenArray(np.memmap(bin_path, dtype=dtype, mode="r", shape=(count,)), full_meta, bin_path)


def _writable_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise CacheDirError(
            f"cannot write the token cache directory {directory} ({err}); choose another with "
            f"--data.cache_dir or the {CACHE_ENV} environment variable"
        ) from err
    return directory


def _write_tokens(path: Path, documents: Sequence[str], tokenizer: Tokenizer, dtype: np.dtype,
                  name: str) -> tuple[int, str]:
    """Stream tokens of ``documents`` to ``path`` chunk by chunk; return (count, sha256)."""
    digest, count = hashlib.sha256(), 0
    bar = tqdm(total=len(documents), unit="doc", desc=f"tokenizing {name}", file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True)
    with open(path, "wb") as f, bar:
        for start in range(0, len(documents), CHUNK_DOCS):
            chunk = documents[start:start + CHUNK_DOCS]
            ids = tokenizer.encode_batch(list(chunk))
            n = sum(map(len, ids))
            data = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=n).tobytes()
            f.write(data)
            digest.update(data)
            count += n
            bar.update(len(chunk))
            bar.set_postfix_str(f"{count * dtype.itemsize / 1e6:.1f} MB")
        f.flush()
        os.fsync(f.fileno())
    return count, digest.hexdigest()


def load_or_build(name: str, fingerprint: str, documents: Callable[[], Sequence[str]],
                  tokenizer: Callable[[], Tokenizer], meta: dict[str, Any] | None = None,
                  cache_dir: str | Path | None = None) -> TokenArray:
    """Verified cache ``name`` or, when missing/stale/damaged, one freshly built.

    ``documents`` and ``tokenizer`` are called only when a build is needed (loading a corpus can
    take minutes; a char vocabulary needs the corpus).
    """
    cached = load(name, fingerprint, cache_dir)
    if cached is not None:
        return cached
    return build(name, documents(), tokenizer(), {**(meta or {}), "fingerprint": fingerprint}, cache_dir)
