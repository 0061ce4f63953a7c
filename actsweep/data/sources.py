"""Where documents come from: the Python standard library, local files, or the Hugging Face hub.

A *source* is one string (``--data.source``):

- ``"python-stdlib"`` — the running interpreter's standard-library ``.py`` files, test folders left
  out: a real code corpus present on every machine (the embedded default);
- a local ``.txt`` / ``.jsonl`` / ``.parquet`` file, a directory holding such files, or a glob;
- a hub dataset name such as ``roneneldan/TinyStories`` (needs network or the local HF cache).

Splits are made here too (:class:`Corpus`), deterministically, so the token cache can key on them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from actsweep.data.documents import Documents
from actsweep.data.hub import HUB_DATASETS, documents_split, read_hub
from actsweep.errors import ConfigError, MissingPathError, check_choice

STDLIB = "python-stdlib"
FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")
SPLITS = ("train", "val")
SplitBy = Literal["document", "char"]
SHUFFLE_SEED = 0
EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ACCEPTED = (
    f"'{STDLIB}', a local {'/'.join(FILE_SUFFIXES)} file, a directory or glob of them, "
    "or a Hugging Face hub dataset name (e.g. roneneldan/TinyStories)"
)


# ---------------------------------------------------------------------------------------------
# Source kinds


def source_kind(source: str) -> str:
    """``"stdlib"``, ``"files"`` or ``"hub"``; raise FileNotFoundError for anything else."""
    if source == STDLIB:
        return "stdlib"
    if Path(source).expanduser().exists() or glob.has_magic(source):
        return "files"
    if HUB_NAME.match(source) and not source.endswith(FILE_SUFFIXES):
        return "hub"
    raise MissingPathError(f"data source {source!r} does not exist; accepted: {ACCEPTED}")


def stdlib_files() -> list[Path]:
    """Sorted ``.py`` files of the running interpreter's stdlib, without tests or site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_STDLIB_DIRS)
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return sorted(files)


def local_files(source: str) -> list[Path]:
    """Data files named by a path, a directory (searched recursively) or a glob, sorted."""
    path = Path(source).expanduser()
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    elif glob.has_magic(source):
        candidates = [Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True)]
    else:
        candidates = [path]
    files = sorted(p.resolve() for p in candidates if p.suffix in FILE_SUFFIXES)
    if not files:
        raise MissingPathError(f"no {'/'.join(FILE_SUFFIXES)} files at {source!r}; accepted: {ACCEPTED}")
    return files


def describe(source: str) -> str:
    """Stable, human-readable identity of a source (absolute paths for files)."""
    kind = source_kind(source)
    if kind == "files" and not glob.has_magic(source):
        return f"files:{Path(source).expanduser().resolve()}"
    if kind == "files":
        return f"files:{os.path.abspath(os.path.expanduser(source))}"
    return f"{kind}:{source}" if kind == "hub" else STDLIB


def fingerprint(source: str) -> str:
    """Changes when the source's content may have changed: files' path+size+mtime; for the stdlib
    the Python version and file list; for the hub, the name (hub datasets are versioned releases)."""
    kind = source_kind(source)
    if kind == "hub":
        return _sha256_text(f"hub:{source}")
    files = stdlib_files() if kind == "stdlib" else local_files(source)
    stats = [(str(f), st.st_size, st.st_mtime_ns if kind == "files" else 0) for f in files for st in [f.stat()]]
    return _sha256_text(json.dumps([sys.version, stats] if kind == "stdlib" else stats))


def max_tokens(source: str) -> int | None:
    """An upper bound on the tokens of a local text source without reading it: its bytes (a character
    or byte-level BPE token covers at least one byte); None where size says nothing (hub, parquet)."""
    kind = source_kind(source)
    if kind == "hub":
        return None
    files = stdlib_files() if kind == "stdlib" else local_files(source)
    if any(f.suffix == ".parquet" for f in files):  # compressed: its size bounds nothing
        return None
    return sum(f.stat().st_size for f in files)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading documents


class _Decoder:
    """Decodes bytes as UTF-8 with ``errors="replace"`` and counts the characters replaced.

    Decision: undecodable bytes do not abort a long build; they become U+FFFD and the total is
    reported in a single warning per source, so damage is visible but never silently large.
    """

    def __init__(self) -> None:
        self.replaced = 0

    def __call__(self, data: bytes) -> str:
        text = data.decode("utf-8", errors="replace")
        if "\ufffd" in text:
            self.replaced += text.count("\ufffd") - data.count("\ufffd".encode())
        return text

    def warn(self, source: str) -> None:
        if self.replaced:
            warnings.warn(
                f"{source}: {self.replaced} undecodable byte sequence(s) were not UTF-8 and were "
                "replaced by U+FFFD",
                stacklevel=3,
            )


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as cp1252 ("â€œ" for “), as found in TinyStories' hub parquet split.

    Only touches documents holding the tell-tale "â€" and only when the round trip succeeds.
    """
    if "â€" not in text:
        return text
    try:
        return b"".join(_cp1252_byte(ch) for ch in text).decode("utf-8")
    except UnicodeError:
        return text


def _cp1252_byte(ch: str) -> bytes:
    """cp1252 byte of ``ch``; the five bytes cp1252 leaves undefined (e.g. 0x9D of ”) pass through."""
    try:
        return ch.encode("cp1252")
    except UnicodeEncodeError:
        return ch.encode("latin-1")


def split_txt(text: str, separator: str, name: str = "text") -> list[str]:
    """Documents of a text file in which ``separator`` *ends* each document (TinyStories' layout).

    Decision: when the file holds separators but does not end with one, the trailing text is an
    unterminated (most likely truncated) document and is dropped with a warning — so a head of a
    corpus yields only complete stories. A file without any separator is one whole document.
    """
    parts = text.split(separator)
    if len(parts) > 1 and parts[-1].strip():
        warnings.warn(
            f"{name}: dropped {len(parts[-1])} trailing characters not ended by {separator!r} "
            "(a truncated document)",
            stacklevel=2,
        )
        parts = parts[:-1]
    return [p.strip() for p in parts if p.strip()]


def _missing_column(column: str, present: list[str], where: str) -> ConfigError:
    return ConfigError(f"{where} has no text column {column!r}; columns: {present}. Pass --data.text_column")


def _read_jsonl(path: Path, column: str, decode: _Decoder) -> list[str]:
    docs = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(decode(line))
            except ValueError as err:
                raise ConfigError(f"{path} line {lineno} is not JSON ({err}); fix or remove that line") from err
            if not isinstance(row, dict):
                raise ConfigError(f"{path} line {lineno} is not a JSON object; a .jsonl file has one object per line")
            if column not in row:
                raise _missing_column(column, sorted(row), f"{path} line {lineno}")
            docs.append(row[column])
    return docs


def _read_parquet(path: Path, column: str, decode: _Decoder) -> list[str]:
    import pyarrow.parquet as pq

    import pyarrow as pa

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"{path} is not a readable parquet file ({' '.join(str(err).split())})") from err
    if column not in names:
        raise _missing_column(column, names, str(path))
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    return [decode(v) if isinstance(v, bytes) else v for v in values if v is not None]


def read_file_documents(path: Path, text_column: str, separator: str, decode: _Decoder) -> list[str]:
    """Documents of one local file, by suffix."""
    if path.suffix == ".txt":
        return split_txt(decode(path.read_bytes()), separator, str(path))
    if path.suffix == ".jsonl":
        return _read_jsonl(path, text_column, decode)
    return _read_parquet(path, text_column, decode)


def read_documents(source: str, text_column: str | None = None, separator: str = "<|endoftext|>",
                   split: str = "train") -> list[str]:
    """All documents of ``source`` in their stored order (``split`` only matters for the hub)."""
    kind = source_kind(source)
    decode = _Decoder()
    if kind == "stdlib":
        docs = [decode(p.read_bytes()) for p in stdlib_files()]
    elif kind == "files":
        column = text_column or "text"
        docs = [d for p in local_files(source) for d in read_file_documents(p, column, separator, decode)]
    else:
        docs = read_hub(source, split, text_column)
    decode.warn(source)
    if isinstance(docs, Documents):  # a hub dataset: stays on disk, fixed as it is read
        return docs.mapped(fix_mojibake)
    return [fix_mojibake(d) for d in docs]


# ---------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class Corpus:
    """A source plus every option that decides which documents land in which split.

    - A native validation set (``val_source``, or a hub dataset's validation split/companion) is
      used as is; otherwise documents are shuffled with seed 0 and the last ``val_fraction`` of them
      (at least one) is "val".
    - ``split_by="char"`` instead cuts the concatenated text at ``1 - val_fraction`` of its
      characters in stored order, as the blog's code did (the document at the cut is split).
    - ``max_documents`` caps training documents, ``max_val_documents`` validation documents, both
      taken from the seed-0 shuffled order.
    - A test split, disjoint from both, only when asked for (so training data never changes by
      default): ``test_source`` (a hub dataset's ``test`` split, or files), else the last
      ``test_fraction`` of the training documents (of the text before the validation cut with
      ``split_by="char"``).
    """

    source: str = STDLIB
    text_column: str | None = None
    separator: str = "<|endoftext|>"
    val_source: str | None = None
    val_fraction: float = 0.1
    split_by: SplitBy = "document"
    max_documents: int | None = None
    max_val_documents: int | None = None
    test_fraction: float = 0.0
    test_source: str | None = None

    def __post_init__(self) -> None:
        check_choice("split_by", self.split_by, get_args(SplitBy))
        if not 0.0 < self.val_fraction < 1.0 and self._val_origin() is None:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        source_kind(self.source)  # fail early on a missing path
        if self.test_source is not None:
            source_kind(self.test_source)

    @property
    def has_test(self) -> bool:
        return self.test_source is not None or self.test_fraction > 0

    def _val_origin(self) -> tuple[str, str] | None:
        """(source, split) holding native validation documents, if any."""
        if self.val_source is not None:
            return self.val_source, documents_split(self.val_source)
        if self.split_by == "char":  # an explicit 90/10 cut of the text wins over a hub's own split
            return None
        known = HUB_DATASETS.get(self.source) if source_kind(self.source) == "hub" else None
        if known and known.val_source:
            return known.val_source, documents_split(known.val_source)
        if known and known.val_split:
            return self.source, known.val_split
        return None

    def describe(self) -> str:
        """Stable identity of the source and every split option (for cache names and metadata)."""
        options = {k: v for k, v in asdict(self).items() if k != "source"}
        if self.val_source is not None:
            options["val_source"] = describe(self.val_source)
        if not self.has_test:  # corpora without a test split keep their earlier identity (and caches)
            del options["test_fraction"], options["test_source"]
        elif self.test_source is not None:
            options["test_source"] = describe(self.test_source)
        return f"{describe(self.source)} {json.dumps(options, sort_keys=True)}"

    def training_identity(self) -> str:
        """What decides the training documents: every option except where test documents come from."""
        return replace(self, test_source=None).describe() if self.test_source is not None else self.describe()

    def fingerprint(self) -> str:
        parts = [fingerprint(self.source)]
        if self.val_source is not None:
            parts.append(fingerprint(self.val_source))
        if self.test_source is not None:
            parts.append(fingerprint(self.test_source))
        return _sha256_text(" ".join(parts))

    def max_tokens(self) -> int | None:
        """An upper bound on the tokens of both splits together (see `max_tokens`), or None."""
        bounds = [max_tokens(s) for s in (self.source, self.val_source) if s is not None]
        return None if None in bounds else sum(bounds)

    def load_splits(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}``, deterministic for fixed options and source
        content; "test" is empty without ``test_source`` or ``test_fraction``."""
        docs = read_documents(self.source, self.text_column, self.separator)
        origin = self._val_origin()
        if origin is not None:
            val = read_documents(origin[0], self.text_column, self.separator, split=origin[1])
            train, val = _shuffled(docs), _shuffled(val)
        elif self.split_by == "char":
            train, val = _split_chars(docs, self.val_fraction)
        else:
            train, val = _split_documents(_shuffled(docs), self.val_fraction)
        train, test = self._split_test(train)
        return {"train": train[: self.max_documents], "val": val[: self.max_val_documents], "test": test}

    def _split_test(self, train: list[str]) -> tuple[list[str], list[str]]:
        """(training documents, test documents): from ``test_source``, or held out of ``train``."""
        if self.test_source is not None:
            split = "test" if source_kind(self.test_source) == "hub" else "train"
            return train, read_documents(self.test_source, self.text_column, self.separator, split=split)
        if not self.test_fraction:
            return train, []
        if self.split_by == "char":  # the share of the whole text, cut from the end of the training text
            origin_share = 1.0 if self._val_origin() else 1.0 - self.val_fraction
            return _split_chars(train, min(self.test_fraction / origin_share, 1.0))
        return _split_documents(train, self.test_fraction)


def _shuffled(docs: Sequence[str]) -> Sequence[str]:
    order = np.random.Generator(np.random.PCG64(SHUFFLE_SEED)).permutation(len(docs))
    if isinstance(docs, Documents):
        return docs.permuted(order)  # a view: nothing read
    return [docs[i] for i in order]


def _split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    n_val = max(1, round(len(docs) * val_fraction)) if len(docs) > 1 else 0
    return docs[: len(docs) - n_val], docs[len(docs) - n_val:]


def _split_chars(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    ends = np.cumsum([len(d) for d in docs])
    if not len(ends):
        return [], []
    cut = int(ends[-1] * (1.0 - val_fraction))
    i = int(np.searchsorted(ends, cut, side="right"))
    if i == len(docs):
        return docs, []
    offset = cut - (int(ends[i - 1]) if i else 0)
    head, tail = docs[i][:offset], docs[i][offset:]
    return docs[:i] + ([head] if head else []), [tail] + docs[i + 1:]


def load_documents(source: str, split: str = "train", **options: object) -> list[str]:
    """Documents of one split (``"train"`` or ``"val"``); ``options`` are :class:`Corpus` fields."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return Corpus(source=source, **options).load_splits()[split]  # type: ignore[arg-type]
