"""Peak memory of building a token cache grows with the batch, not with the corpus.

A synthetic corpus of `--docs` documents (~1 KB each) and one 8x larger are saved as Arrow datasets
(what `datasets` keeps for a hub dataset). A fresh process per measurement reads one the way
`actsweep.data.hub.read_hub` does, shuffles it as `Corpus` does, and builds its GPT-2 token cache
(`cache.build`); it reports its own peak RSS (`ru_maxrss`). Arms, interleaved:

- `streaming`: the documents stay in the Arrow files (`arrow_documents`), read a batch at a time;
- `lists`: the documents copied into a Python list first (what `read_hub` did before), the yardstick.

    python bench/tokenize_memory.py [--docs 20000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, interleave, median_ratio, spread, write_section

SCALE = 8
MB = 1e6


def child(dataset_dir: str, arm: str, cache_dir: str) -> None:
    """Measure one build in this (fresh) process; print its peak RSS in MB as JSON."""
    import datasets

    from actsweep.data import cache, sources
    from actsweep.data.documents import arrow_documents
    from actsweep.data.tokenizers import get_tokenizer

    dataset = datasets.load_from_disk(dataset_dir)
    imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3 / MB  # peak so far: imports, open
    docs = arrow_documents(dataset, "text") if arm == "streaming" else list(dataset["text"])
    built = cache.build(f"{arm}-{Path(dataset_dir).name}", sources._shuffled(docs), get_tokenizer("gpt2"), {}, cache_dir)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1e3 / MB  # Linux: kB
    print(json.dumps({"peak_mb": peak, "build_mb": peak - imports, "tokens": len(built)}))


def write_corpus(folder: Path, n_docs: int) -> Path:
    import datasets

    words = "the cat sat on a mat and ran far away over the hills to the sea".split()

    def documents():
        for i in range(n_docs):
            yield {"text": " ".join(words[(i * 7 + j) % len(words)] for j in range(200)) + f" #{i}"}

    path = folder / f"corpus-{n_docs}"
    datasets.Dataset.from_generator(documents, cache_dir=str(folder / "hf")).save_to_disk(str(path))
    return path


def measure(dataset: Path, arm: str, cache_dir: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(dataset), arm, str(cache_dir)], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small, large = write_corpus(folder, args.docs), write_corpus(folder, SCALE * args.docs)
        arms = {f"{arm} {size}": (lambda d=d, arm=arm: measure(d, arm, folder / "cache"))
                for arm in ("streaming", "lists") for size, d in (("1x", small), (f"{SCALE}x", large))}
        results = interleave(arms, args.reps)
    peak = {name: r["peak_mb"] for name, r in results.items()}
    tokens = {name: r["tokens"][0] for name, r in results.items()}
    build = {name: r["build_mb"] for name, r in results.items()}
    rows = [f"| {name} | {tokens[name] / 1e6:.1f}M | {spread(peak[name])} | {spread(build[name])} |" for name in results]
    ratios = {arm: median_ratio(peak[f"{arm} {SCALE}x"], peak[f"{arm} 1x"]) for arm in ("streaming", "lists")}
    body = (
        f"{args.docs} and {SCALE * args.docs} synthetic documents (~1 KB each) as Arrow datasets; each build in a "
        f"fresh process (imports included), {args.reps} interleaved repetitions; peak RSS in MB, median (min–max).\n\n"
        "| arm, corpus | tokens | peak RSS (MB) | peak above the imports (MB) |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Peak memory, {SCALE}x corpus / 1x corpus (median of paired ratios): **streaming {ratios['streaming']:.2f}**, "
        f"lists {ratios['lists']:.2f}. Streaming keeps one batch of documents ({1000} at a time) as Python strings; "
        "the corpus stays in its memory-mapped Arrow files."
    )
    print(body)
    write_section("Token cache memory against corpus size", body)


if __name__ == "__main__":
    main()
