"""Building the GPT-2 token cache of the embedded corpus against tiktoken's own batch encoder.

Arm `cache`: `actsweep.cache.build` (chunks of documents through `GPT2Tokenizer.encode_batch`,
uint16 conversion, sha256, fsync'd write) into a fresh temporary directory. Arm `tiktoken`:
`encode_ordinary_batch` over the same texts with the same thread count, nothing written. The
documents are read once, untimed; MB are UTF-8 bytes of text.

    python bench/tokenize_throughput.py --reps 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

from common import interleave, median_ratio, spread, write_section

from actsweep.data import cache
from actsweep.data.sources import STDLIB, Corpus
from actsweep.data.tokenizers import GPT2Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    splits = Corpus(source=STDLIB).load_splits()
    texts = splits["train"] + splits["val"]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    tokenizer = GPT2Tokenizer()
    threads = os.cpu_count() or 1

    def build() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            cache.build("bench", texts, tokenizer, {"source": STDLIB}, cache_dir=directory)
            return {"MB/s": megabytes / (time.perf_counter() - start)}

    def tiktoken_batch() -> dict[str, float]:
        start = time.perf_counter()
        tokenizer.encoding.encode_ordinary_batch(texts, num_threads=threads)
        return {"MB/s": megabytes / (time.perf_counter() - start)}

    print(f"{len(texts)} documents, {megabytes:.1f} MB, {threads} threads")
    results = interleave({"cache": build, "tiktoken": tiktoken_batch}, args.reps)
    cache_rates, tiktoken_rates = results["cache"]["MB/s"], results["tiktoken"]["MB/s"]
    ratio = median_ratio(cache_rates, tiktoken_rates)
    print(f"cache/tiktoken = {ratio:.3f} (target >= 0.8)")
    body = (
        f"Corpus `{STDLIB}` (train + val documents: {len(texts)}, {megabytes:.1f} MB of UTF-8), gpt2, "
        f"{threads} threads in both arms, {args.reps} interleaved repetitions.\n\n"
        "| arm | MB/s median (min–max) |\n| --- | --- |\n"
        f"| actsweep cache build | {spread(cache_rates)} |\n"
        f"| tiktoken encode_ordinary_batch | {spread(tiktoken_rates)} |\n\n"
        f"Ratio (median of per-repetition ratios): **{ratio:.3f}** (target ≥ 0.8)."
    )
    write_section("Tokenization: token cache build vs tiktoken batch encoder", body)


if __name__ == "__main__":
    main()
