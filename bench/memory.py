"""Peak memory of a quickstart fit, and proof that training windows come from the memory-mapped cache.

1. Peak RSS (`ru_maxrss` of a child process) of `python -c "import actsweep.train.cli"` (the
   imports alone) and of `actsweep fit --config configs/quickstart.yaml --trainer.max_steps 20`.
2. A token cache of `--tokens` synthetic tokens (uint16) is put in place of a small corpus' train
   cache (same fingerprint, fresh count and sha256); a fresh process then measures its RSS before
   and after `TextDataModule.setup()` plus `--batches` training batches, and checks that the train
   tokens are a view of an `np.memmap` of the cache file rather than a copy in RAM.

    python bench/memory.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, write_section

from actsweep.data.module import TextDataModule

MB = 1e6


def rss_bytes() -> dict[str, int]:
    """This process' resident memory: `anon` (its own heap: a copy of the corpus would land here) and
    `file` (pages of mapped files, i.e. the shared, reclaimable page cache of the memmap)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[name].split()[0]) * 1024 for key, name in (("anon", "RssAnon"), ("file", "RssFile"))}


def children_peak_rss(args: list[str]) -> float:
    """Run `args` to completion; the largest peak RSS (MB) of any child so far (Linux: ru_maxrss in kB)."""
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1e3 / MB


def memmap_file(array: np.ndarray) -> str | None:
    """The file behind `array` when it is (a view of) an `np.memmap`, else None."""
    base = array
    while base is not None:
        if isinstance(base, np.memmap) and base.filename:
            return str(base.filename)
        base = getattr(base, "base", None)
    return None


def data_module(corpus: Path, cache_dir: Path) -> TextDataModule:
    return TextDataModule(source=str(corpus), tokenizer="char", block_size=128, batch_size=32, cache_dir=str(cache_dir))


def enlarge_train_cache(corpus: Path, cache_dir: Path, tokens: int) -> Path:
    """Build the small corpus' caches, then replace the train tokens by `tokens` random ones."""
    data = data_module(corpus, cache_dir)
    data.prepare_data()
    train = data._token_arrays()["train"]
    ids = np.random.default_rng(0).integers(0, data.vocab_size, tokens, dtype=np.uint64).astype(train.tokens.dtype)
    meta_path = train.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    ids.tofile(train.path)
    meta.update(count=tokens, sha256=hashlib.sha256(ids.tobytes()).hexdigest())
    meta_path.write_text(json.dumps(meta))
    return train.path


def child(corpus: Path, cache_dir: Path, batches: int) -> None:
    """In a fresh process: RSS around setup and training batches; prints one JSON line."""
    before = rss_bytes()
    data = data_module(corpus, cache_dir)
    data.setup("fit")
    for step in range(batches):
        data.train_batch(step)
    print(json.dumps({"before": before, "after": rss_bytes(), "file": memmap_file(data._train),
                      "tokens": len(data._train), "bytes": data._train.nbytes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64_000_000, help="synthetic train tokens (uint16: 2 bytes each)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.batches)
        return

    with tempfile.TemporaryDirectory() as tmp:
        imports = children_peak_rss([sys.executable, "-c", "import actsweep.train.cli"])
        fit = children_peak_rss([
            "actsweep", "fit", "--config", "configs/quickstart.yaml", "--trainer.max_steps", "20",
            "--trainer.logger.init_args.save_dir", tmp,
        ])
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("<|endoftext|>".join(f"document {i}: " + "abcdefgh " * 200 for i in range(200)))
        cache_dir = Path(tmp) / "cache"
        path = enlarge_train_cache(corpus, cache_dir, args.tokens)
        out = subprocess.run([sys.executable, __file__, "--batches", str(args.batches), "--child", str(corpus), str(cache_dir)],
                             check=True, capture_output=True, text=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
    growth = {key: (probe["after"][key] - probe["before"][key]) / MB for key in ("anon", "file")}
    mapped = probe["file"] == str(path)
    print(f"peak RSS: imports {imports:.0f} MB, quickstart fit (20 steps) {fit:.0f} MB")
    print(f"train tokens {probe['tokens']:,} ({probe['bytes'] / MB:.0f} MB) memory-mapped from the cache file: {mapped}; "
          f"RSS growth over setup + {args.batches} batches: anonymous {growth['anon']:.1f} MB, "
          f"file-backed {growth['file']:.1f} MB")
    body = (
        "| measurement | value |\n| --- | --- |\n"
        f"| peak RSS, `import actsweep.train.cli` | {imports:.0f} MB |\n"
        f"| peak RSS, `actsweep fit --config configs/quickstart.yaml --trainer.max_steps 20` | {fit:.0f} MB |\n"
        f"| synthetic train cache | {probe['tokens']:,} tokens, {probe['bytes'] / MB:.0f} MB |\n"
        f"| train tokens are an `np.memmap` of the cache file | {mapped} |\n"
        f"| anonymous RSS growth over `setup()` + {args.batches} training batches of 32 x 129 | {growth['anon']:.1f} MB |\n"
        f"| file-backed RSS growth (mapped page cache) over the same | {growth['file']:.1f} MB |\n\n"
        "Peak RSS is `ru_maxrss` of child processes; RSS growth is RssAnon/RssFile of /proc/self/status in a fresh "
        "process. File-backed growth is the kernel mapping pages of the cache file around each window read "
        "(fault-around and readahead over a file still in the page cache): shared, clean and reclaimable, not a copy. "
        "A copy of the corpus would show up as anonymous growth of the cache's size."
    )
    write_section("Memory: quickstart fit and memory-mapped token cache", body)
    if not mapped or growth["anon"] > probe["bytes"] / MB / 4:
        sys.exit("training windows are not read from the memory-mapped cache")


if __name__ == "__main__":
    main()
