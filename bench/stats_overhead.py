"""Training throughput with every statistics callback on vs off, at the quickstart size.

Both arms are the real `actsweep fit` path built from configs/quickstart.yaml (see
`train_throughput.Bench`): the same model, batches, optimizer, logger and logging interval
(`log_every_n_steps`), differing only in the statistics callbacks. Unlike the bare-loop comparison,
validation stays on, so the timed steps include a validation with the dead-units hooks and the
attention-entropy probe. Arms are interleaved with rotating order; the figure is the median of the
per-repetition ON/OFF ratios, in wall-clock and in process CPU time.

    python bench/stats_overhead.py --reps 5
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings

from common import interleave, median_ratio, spread, write_section
from train_throughput import Bench

WARMUP, STEPS, VAL_EVERY = 3, 100, 50  # the timed window holds 10 logging steps and one validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as log_dir:
        bench = Bench([], WARMUP, STEPS, log_dir, val_check_interval=VAL_EVERY)
        results = interleave({"off": lambda: bench.lightning(False), "on": lambda: bench.lightning(True)}, args.reps)
    rows = []
    for measure in ("wall", "cpu"):
        ratio = median_ratio(results["on"][measure], results["off"][measure])
        print(f"statistics on/off ({measure}) = {ratio:.3f} (target >= 0.97)")
        rows.append(f"| {measure} | {spread(results['on'][measure])} | {spread(results['off'][measure])} | **{ratio:.3f}** |")
    body = (
        f"configs/quickstart.yaml as shipped (log_every_n_steps 10) with validation every {VAL_EVERY} steps, "
        f"{STEPS} timed steps after {WARMUP} warmup steps, {args.reps} interleaved repetitions (rotating order); "
        f"ratio = median of per-repetition ON/OFF ratios. ON: {', '.join(n.rsplit('.', 1)[1] for n in bench.statistics)}. "
        "Target >= 0.97.\n\n"
        "| clock | ON tokens/s median (min–max) | OFF tokens/s median (min–max) | ON/OFF |\n"
        "| --- | --- | --- | --- |\n" + "\n".join(rows)
    )
    write_section("Statistics callbacks overhead", body)


if __name__ == "__main__":
    main()
