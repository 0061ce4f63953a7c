"""Learning-rate schedules against Hugging Face's own (what ReLU's Revival trained with)."""

import pytest
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

from actsweep.errors import ConfigError
from actsweep.train.schedules import build_schedule


def hf_multipliers(make, total: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer)
    values = []
    for _ in range(total):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_linear_warmup_then_decay_equals_huggingface():
    total = 200
    ours = build_schedule("linear", total, warmup=0.05, min_ratio=0.0)
    theirs = hf_multipliers(lambda o: get_linear_schedule_with_warmup(o, 10, total), total)
    assert [ours(s) for s in range(total)] == pytest.approx(theirs, abs=1e-12)


def test_cosine_with_floor_equals_huggingface():
    total = 150
    ours = build_schedule("cosine", total, warmup=7, min_ratio=0.1)
    theirs = hf_multipliers(
        lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, 7, total, min_lr_rate=0.1), total)
    assert [ours(s) for s in range(total)] == pytest.approx(theirs, abs=1e-12)


def test_constant_and_errors():
    assert [build_schedule("constant", 10, 2, 0.0)(s) for s in (0, 1, 2, 9)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="cosine, linear, constant"):
        build_schedule("step", 10, 0, 0.0)
    with pytest.raises(ConfigError, match="max_steps"):
        build_schedule("cosine", -1, 0, 0.0)
