"""Learning-rate schedules: a linear warmup, then a named decay from the peak to `min_ratio` of it.

`warmup` below 1 is a fraction of the run's steps (ReLU's Revival: 5%); 1 or more is a step count.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

from actsweep.errors import ConfigError, check_choice

DECAYS: dict[str, Callable[[float], float]] = {
    "cosine": lambda progress: 0.5 * (1 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1 - progress,
    "constant": lambda progress: 1.0,
}
ScheduleName = Literal[tuple(DECAYS)]


def warmup_steps(warmup: float, total: int) -> int:
    return int(round(warmup * total)) if warmup < 1 else int(warmup)


def check_schedule(name: str) -> None:
    check_choice("schedule", name, DECAYS)


def check_run_length(total: int) -> None:
    """The schedule decays over `total` optimizer steps (`trainer.max_steps`): a fit needs a finite run."""
    if total < 1:
        raise ConfigError(f"the learning-rate schedule needs a finite run: set --trainer.max_steps to a positive "
                          f"number, got {total}")


def build_schedule(name: str, total: int, warmup: float, min_ratio: float) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each optimizer step (for `LambdaLR`)."""
    check_schedule(name)
    check_run_length(total)
    decay, warm = DECAYS[name], warmup_steps(warmup, total)

    def multiplier(step: int) -> float:
        if step < warm:
            return step / warm  # as Hugging Face's schedules: lr 0 at step 0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * decay(progress)

    return multiplier
