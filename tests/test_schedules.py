"""Learning-rate schedules against Hugging Face's own (what ReLU's Revival trained with)."""

import pytest
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

from actsweep.errors import ConfigError
from actsweep.train.schedules import build_schedule, warmup_steps


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


def test_warmup_below_one_is_a_fraction_else_a_step_count():
    assert warmup_steps(0.05, 200) == 10
    assert warmup_steps(0.057, 100) == 6  # rounded, not truncated
    assert warmup_steps(0.0, 100) == 0
    assert (warmup_steps(1, 50), warmup_steps(1.5, 50), warmup_steps(3, 50)) == (1, 1, 3)


def test_edges_by_hand():
    assert build_schedule("cosine", 10, 0, 0.0)(0) == 1.0  # no warmup: the peak at step 0
    assert build_schedule("cosine", 1, 0, 0.2)(0) == 1.0  # a one-step run is allowed
    assert build_schedule("linear", 3, 2, 0.0)(3) == 0.0  # one step after warmup decays all the way
    assert build_schedule("linear", 4, 2, 0.0)(3) == 0.5
    assert build_schedule("linear", 10, 4, 0.1)(2) == 0.5  # warmup ignores the floor
    cosine = build_schedule("cosine", 10, 0, 0.25)
    assert [cosine(s) for s in (5, 10, 15)] == pytest.approx([0.625, 0.25, 0.25], abs=1e-15)  # held past the end


def test_constant_and_errors():
    assert [build_schedule("constant", 10, 2, 0.0)(s) for s in (0, 1, 2, 9)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match=r"^unknown schedule 'step'; choose one of cosine, linear, constant$"):
        build_schedule("step", 10, 0, 0.0)
    message = "the learning-rate schedule needs a finite run: set --trainer.max_steps to a positive number"
    for total in (-1, 0):
        with pytest.raises(ConfigError, match=f"^{message}, got {total}$"):
            build_schedule("cosine", total, 0, 0.0)
