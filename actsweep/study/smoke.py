"""`actsweep sweep FILE --smoke`: every configuration of a sweep with its real config for a few optimizer
steps, on any machine, before a cluster spends hours on it.

What stays: model size and switches, precision, optimizer and kernel choice, clipping, accumulation,
schedule, callbacks, window mode and sampling, block size. What changes, and is printed:

- hub data: a small local corpus (the first files of the Python standard library, always present);
- a hub tokenizer that is not in the local cache: a byte-level BPE trained on that corpus;
- batch 2, 4 validation windows, `SMOKE_STEPS` optimizer steps, validation after each, every step logged;
- one seed per configuration (the seeds share the configuration);
- 16-mixed on a machine without CUDA becomes bf16-mixed, what Lightning itself would quietly use on a
  CPU: still autocast under Lightning's MixedPrecision plugin with clipping (the combination that
  used to crash), but CPUs emulate fp16 matrix products (two steps of the 124M revival model took
  11 minutes on 2 cores). The GradScaler itself is exercised on a small model in
  tests/test_adamw_kernels.py.

Smoke runs live under their own root (default `lightning_logs/smoke`), in a sweep folder marked
`SMOKE`; a smoke run replaces the previous one there and never touches a folder without the marker.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from actsweep.data.sources import source_kind, stdlib_files
from actsweep.data.tokenizers import HF_PREFIX, train_bpe_tokenizer
from actsweep.study.sweep import Sweep, SweepError

SMOKE_ROOT = Path("lightning_logs/smoke")
MARKER = "SMOKE"
SMOKE_STEPS = 2
CORPUS_FILES, CORPUS_CHARS = 120, 20_000  # ~1.5 MB of code: seconds to tokenize and to train a BPE on
SMOKE_VOCAB = 512


def write_corpus(folder: Path) -> Path:
    """`folder/corpus.jsonl`: the heads of the first standard-library files, one document each."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    docs = [f.read_text(encoding="utf-8", errors="replace")[:CORPUS_CHARS] for f in stdlib_files()[:CORPUS_FILES]]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs if d.strip()))
    return path


def hub_tokenizer_cached(spec: str) -> bool:
    """Whether `hf:<spec>` loads without the network (a local file, or a hub tokenizer in the HF cache)."""
    if spec.endswith(".json") or Path(spec).expanduser().is_dir():
        return Path(spec).expanduser().exists()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec, "tokenizer.json"), str)


def is_hub(source: Any) -> bool:
    try:
        return isinstance(source, str) and source_kind(source) == "hub"
    except FileNotFoundError:  # a missing local path: the corpus stands in for it too
        return True


def smoke_changes(config: dict[str, Any], root: Path, cuda: bool) -> tuple[dict[str, Any], list[str]]:
    """The dotted overrides that turn `config` (a fit config) into its smoke run, and one line per change."""
    data, trainer = config.get("data") or {}, config.get("trainer") or {}
    changes: dict[str, Any] = {}
    notes: list[str] = []

    def change(key: str, value: Any, why: str) -> None:
        section, name = key.split(".", 1)
        old = (config.get(section) or {}).get(name)
        changes[key] = value
        notes.append(f"{key}: {old} -> {value}  ({why})")

    corpus = root / "corpus"
    if is_hub(data.get("source")) or is_hub(data.get("val_source")):
        change("data.source", str(corpus / "corpus.jsonl"), "hub data: a local corpus stands in")
        for key in ("val_source", "max_documents", "max_val_documents"):
            if data.get(key) is not None:
                change(f"data.{key}", None, "belongs to the hub data")
        if data.get("text_column") not in (None, "text"):
            change("data.text_column", "text", "the local corpus' column")
    tokenizer = str(data.get("tokenizer", "gpt2"))
    if tokenizer.startswith(HF_PREFIX) and not hub_tokenizer_cached(tokenizer[len(HF_PREFIX):]):
        change("data.tokenizer", f"{HF_PREFIX}{corpus / 'tokenizer.json'}",
               f"not cached: a {SMOKE_VOCAB}-token byte-level BPE trained on the local corpus stands in")
    change("data.batch_size", 2, "fits a CPU")
    if data.get("val_batch_size") is not None:
        change("data.val_batch_size", 2, "fits a CPU")
    change("data.val_windows", 4, "fits a CPU")
    change("data.probe_windows", 2, "fits a CPU")
    change("data.cache_dir", str(root / "cache"), "the smoke's own token cache")
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    change("trainer.max_steps", SMOKE_STEPS, "a few optimizer steps")
    change("trainer.val_check_interval", accumulate, "validation after every optimizer step")
    change("trainer.log_every_n_steps", 1, "every statistic on every step")
    if trainer.get("precision") == "16-mixed" and not cuda:
        change("trainer.precision", "bf16-mixed", "no CUDA: CPUs emulate fp16 matrix products; Lightning's own "
                                                  "substitute, still autocast with clipping")
    return changes, notes


def smoke_sweep(sweep: Sweep, root: Path, cuda: bool) -> tuple[Sweep, list[str]]:
    """The smoke version of `sweep` (its corpus and tokenizer written under `root` when needed) and the
    lines saying what changed."""
    config = yaml.safe_load(sweep.base.read_text()) or {}
    changes, notes = smoke_changes(config, root, cuda)
    for part in sweep.grid:
        clash = sorted(set(part) & {"data.source", "data.tokenizer"})
        if clash:
            raise SweepError(f"--smoke cannot stand in for {', '.join(clash)} given by the grid")
    if "data.source" in changes or "data.tokenizer" in changes:  # both live in root/corpus
        corpus = write_corpus(root / "corpus")
        if "data.tokenizer" in changes:
            texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
            train_bpe_tokenizer(texts, root / "corpus" / "tokenizer.json", SMOKE_VOCAB)
    if len(sweep.seeds) > 1 or any(sweep.part_seeds):
        notes.append(f"seeds: {sweep.seeds} -> {sweep.seeds[:1]}  (one seed per configuration)")
    smoke = dataclasses.replace(sweep, seeds=sweep.seeds[:1], part_seeds=[], forced={**sweep.forced, **changes})
    return smoke, notes


def prepare_root(root: Path, name: str) -> None:
    """Empty `root/name` for a new smoke run; refuse a folder that is not a smoke run's."""
    folder = root / name
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise SweepError(f"{folder} exists and holds no smoke run ({MARKER} marker): smoke runs never "
                             "share a folder with real results; pass another --root")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("smoke runs of actsweep sweep --smoke; replaced by the next one\n")
