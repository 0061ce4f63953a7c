"""The sampling noise of an evaluation: the standard error over its windows, from running sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actsweep.train.module import window_standard_error


def sums(losses: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = torch.tensor(losses, dtype=torch.float64)
    return torch.tensor(float(len(losses)), dtype=torch.float64), t.sum(), t.square().sum()


@pytest.mark.parametrize("losses", [[2.0, 2.5], [3.1, 2.9, 3.4, 3.0, 2.2, 2.8], list(np.linspace(1, 5, 1000))])
def test_standard_error_matches_numpy(losses):
    x = np.asarray(losses)
    assert window_standard_error(*sums(x)).item() == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=1e-9)


def test_standard_error_by_hand_and_edges():
    assert window_standard_error(*sums(np.array([1.0, 3.0]))).item() == pytest.approx(1.0)  # s = sqrt(2), n = 2
    assert math.isnan(window_standard_error(*sums(np.array([4.0]))).item())
    assert window_standard_error(*sums(np.array([2.0, 2.0, 2.0]))).item() == 0.0
