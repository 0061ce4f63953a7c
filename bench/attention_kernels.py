"""Forward + backward of actsweep's quickstart-sized GPT under each `sdpa_backend`, and with the
entropy regulariser (its attention unfused, its penalty in the loss), against the same pass of the
independent bench/nanogpt.py model (one thread, CPU time, interleaved repetitions).

    python bench/attention_kernels.py --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import interleave, median_ratio, write_section

import nanogpt
from actsweep.model.gpt import GPT, GPTConfig

VOCAB, PASSES = 222, 3  # the quickstart's character vocabulary; passes timed per repetition


def timed(step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, y: torch.Tensor) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        start = time.process_time()
        for _ in range(PASSES):
            step(x, y)
        return {"cpu": (time.process_time() - start) / PASSES}
    return run


def actsweep_step(backend: str, entropy_reg: bool = False) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=128, n_layer=4, n_head=4, n_embd=128, sdpa_backend=backend,
                          entropy_reg=entropy_reg))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        (loss + model.entropy_penalty()[0] if entropy_reg else loss).backward()  # as ActSweepModule adds it
    return step


def bare_step() -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = nanogpt.GPT(nanogpt.Config(vocab_size=VOCAB))
    return lambda x, y: model(x, y).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randint(0, VOCAB, (32, 128)), torch.randint(0, VOCAB, (32, 128))
    steps = {"bare": bare_step(), **{b: actsweep_step(b) for b in ("adaptive", "auto", "math")},
             "adaptive + entropy_reg": actsweep_step("adaptive", entropy_reg=True)}
    results = interleave({name: timed(step, x, y) for name, step in steps.items()}, args.reps)
    rows = [f"| {name} | {1000 * statistics.median(r['cpu']):.0f} | **{median_ratio(r['cpu'], results['bare']['cpu']):.3f}** |"
            for name, r in results.items()]
    print("\n".join(rows))
    write_section("Attention kernels: forward + backward at the quickstart size", (
        f"Batch 32×128, 4L/128d, vocabulary {VOCAB}, one thread; CPU ms per forward + backward (median of "
        f"{args.reps} interleaved repetitions of {PASSES} passes) and the median per-repetition ratio to the "
        "independent bench/nanogpt.py model (`bare`).\n\n| arm | ms | ratio to bare |\n| --- | --- | --- |\n"
        + "\n".join(rows) + "\n\nMedian per-repetition ratios: `adaptive` against `auto` (the same kernel; what "
        f"the logit bound costs) **{median_ratio(results['adaptive']['cpu'], results['auto']['cpu']):.3f}**, `math` against "
        f"`auto` **{median_ratio(results['math']['cpu'], results['auto']['cpu']):.3f}**, the entropy regulariser against "
        "the same model without it (`adaptive`) "
        f"**{median_ratio(results['adaptive + entropy_reg']['cpu'], results['adaptive']['cpu']):.2f}**."))


if __name__ == "__main__":
    main()
