"""The arithmetic behind the logged numbers (`actsweep.stats.metrics`), against independent
computations: fp64 loops, explicit softmax, hand-computed cases, numpy. Fast: no model is trained."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actsweep.stats import metrics as m
from references import loop_bands, loop_row_entropy, loop_scores, reference_entropy

# -- attention entropy -----------------------------------------------------------------------------


def test_causal_uniform_entropy_is_the_mean_log_position():
    for T in (1, 2, 5, 128):
        assert m.causal_uniform_entropy(T) == pytest.approx(sum(math.log(t) for t in range(1, T + 1)) / T, rel=1e-12)


def test_causal_scores_equal_dot_products_below_the_diagonal():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)  # B, H, T, d all differ
    s = m.causal_scores(q.double(), k.double())
    assert s.dtype == torch.float32 and s.shape == (2, 3, 5, 5)
    ref = loop_scores(q, k)
    for b in range(2):
        for h in range(3):
            for i in range(5):
                for j in range(5):
                    if ref[b][h][i][j] is None:
                        assert s[b, h, i, j] == float("-inf")
                    else:
                        assert s[b, h, i, j].item() == pytest.approx(ref[b][h][i][j], rel=1e-5, abs=1e-6)
    # Any leading dimensions: one head's (T, d) gives that head's (T, T).
    torch.testing.assert_close(m.causal_scores(q[1, 2, :4], k[1, 2, :4]), s[1, 2, :4, :4])


@pytest.mark.parametrize("t", [1, 2, 9])
def test_head_entropy_matches_explicit_softmax(t):
    g = torch.Generator().manual_seed(t)
    q, k = torch.randn(3, 4, t, 8, generator=g) * 2, torch.randn(3, 4, t, 8, generator=g) * 2
    ref = reference_entropy(q, k)  # (B, H, T)
    assert ref[..., 0].abs().max() == 0  # the first query attends to itself only
    torch.testing.assert_close(m.head_entropy(q, k, reduce_batch=False).double(), ref.mean(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.head_entropy(q, k).double(), ref.mean((0, 2)), atol=1e-5, rtol=1e-5)


def test_scores_entropy_equals_a_python_loop():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 3, 6, 4, generator=g) * 3, torch.randn(2, 3, 6, 4, generator=g)
    got = m.scores_entropy(m.causal_scores(q, k))
    assert got.shape == (2, 3)
    for b, per_head in enumerate(loop_scores(q, k)):
        for h, rows in enumerate(per_head):
            expected = sum(loop_row_entropy(row) for row in rows) / len(rows)
            assert got[b, h].item() == pytest.approx(expected, rel=1e-5)


def test_entropy_of_peaked_rows_is_exact_where_probabilities_underflow():
    """Logits 200 apart: p = e^-200 underflows in fp32 but the entropy is still exactly computable."""
    s = torch.tensor([[[[0.0, float("-inf")], [200.0, 0.0]]]])
    row = 200 * math.exp(-200) / (1 + math.exp(-200)) + math.log1p(math.exp(-200))
    assert m.scores_entropy(s).item() == pytest.approx(row / 2, abs=1e-30)


def test_uniform_causal_head_reaches_the_ceiling():
    q, k = torch.zeros(1, 1, 128, 16), torch.randn(1, 1, 128, 16)
    assert m.causal_uniform_entropy(128) == pytest.approx(3.878, abs=5e-4)
    assert m.head_entropy(q, k).item() == pytest.approx(math.lgamma(129) / 128, rel=1e-5)


def test_max_logit_is_the_largest_magnitude_below_the_diagonal():
    s = torch.tensor([[[[-7.0, float("-inf")], [3.0, 5.0]]]])
    assert m.max_logit(s).item() == 7.0
    assert m.max_logit(torch.tensor([[[[-0.5, float("-inf")], [0.25, -0.125]]]])).item() == 0.5  # below 1: no 0/1 mixup


def test_entropy_bands_both_definitions():
    values = torch.tensor([0.0, 0.9, 1.0, 2.5, 3.9, 4.0])
    assert m.entropy_bands(values, 4.0).tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6])
    # The paper's bands are relative to the largest head (3.0 here): [0, .75) [.75, 1.5) [1.5, 2.25) [2.25, 3]
    paper = torch.tensor([0.1, 0.8, 1.4, 1.6, 2.3, 3.0])
    assert m.entropy_bands(paper, paper.max()).tolist() == pytest.approx([1 / 6, 2 / 6, 1 / 6, 2 / 6])


def test_entropy_bands_of_a_diverged_model_are_all_nan():
    for values, top in ((torch.tensor([1.0, float("nan")]), 2.0), (torch.tensor([1.0, 2.0]), float("nan")),
                        (torch.tensor([1.0, float("inf")]), 2.0)):
        bands = m.entropy_bands(values, top)
        assert bands.shape == (4,) and bands.dtype == torch.float32 and bands.isnan().all()


def test_entropy_bands_equal_a_loop_on_every_edge():
    top = 2.0
    values = [0.0, 0.49, 0.5, 0.99, 1.0, 1.49, 1.5, 1.99, 2.0, 2.5]  # each edge, and above the top
    got = m.entropy_bands(torch.tensor(values).view(2, 5), top)
    assert got.tolist() == pytest.approx(loop_bands(values, top), abs=1e-7)
    assert got.tolist() == pytest.approx([0.2, 0.2, 0.2, 0.4], abs=1e-7)
    assert m.entropy_bands(torch.tensor([0.1]), 1.0).tolist() == [1.0, 0.0, 0.0, 0.0]
    # logsumexp - E[s] of a one-hot row can round to just below 0: still the lowest band.
    assert m.entropy_bands(torch.tensor([-1e-7, 1.0]), 1.0).tolist() == [0.5, 0.0, 0.0, 0.5]


# -- FFN activations and the residual stream -------------------------------------------------------


def test_count_dtype_is_float64_except_on_mps():
    assert m.count_dtype(torch.device("cpu")) == torch.float64
    assert m.count_dtype(torch.device("mps")) == torch.float32


def test_activation_and_square_sums_by_hand():
    act = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -0.5, 0.5]])
    got = m.activation_sums(act)
    assert got.dtype == torch.float64 and got.tolist() == [3.0, 4.0, 6.0]  # zero counts as inactive
    sq = m.square_sums(act)
    assert sq.dtype == torch.float64 and sq.tolist() == pytest.approx([1 + 4 + 9 + 0.25 + 0.25, 6.0], rel=1e-15, abs=0)


def test_counts_and_sums_stay_exact_past_float32():
    """2**24 + 1 outputs: float32 would round the count to 2**24; sums are accumulated in float64."""
    act = torch.ones(1).expand(2**24 + 1)  # no memory for the input itself
    assert m.activation_sums(act)[2].item() == 2**24 + 1
    assert m.square_sums(act)[1].item() == 2**24 + 1
    big = torch.tensor([2.0**24, 1.0, 1.0])  # float32: 2**24 + 1 rounds back to 2**24
    assert m.activation_sums(big)[1].item() == 2**24 + 2
    x = torch.tensor([1 + 2**-20])  # its square needs 41 bits
    assert m.square_sums(x)[0].item() == pytest.approx((1 + 2**-20) ** 2, rel=1e-15, abs=0)  # float32 is 1e-12 off


def test_ffn_ratios_by_hand():
    act_sums = torch.tensor([[3.0, 4.0, 6.0], [1.0, -2.0, 8.0]], dtype=torch.float64)
    sq_sums = torch.tensor([[18.0, 2.0], [4.0, 16.0]], dtype=torch.float64)
    got = m.ffn_ratios(act_sums, sq_sums)
    assert got["inactive_frac"].tolist() == [0.5, 0.125]
    assert got["act_mean"].tolist() == pytest.approx([4 / 6, -0.25])
    assert got["rms"].tolist() == [3.0, 0.5]
    assert all(v.dtype == torch.float32 for v in got.values())


def test_dead_units_need_every_window():
    """A unit counts as alive when it fires in any batch, even once; zero is not firing."""
    first = torch.tensor([[[1.0, -1.0, 0.0, -2.0]]])
    second = torch.tensor([[[-1.0, -1.0, 3.0, 0.0]]])
    fired = m.fired_units(second, m.fired_units(first))
    assert fired.tolist() == [True, False, True, False]
    assert m.fired_units(first).tolist() == [True, False, False, False]
    assert m.never_fired_share(torch.stack([fired, fired.new_ones(4)])).tolist() == [0.5, 0.0]


def test_fired_units_over_batch_and_tokens():
    act = -torch.ones(2, 3, 5)  # (batch, tokens, hidden)
    act[1, 2, 4] = 0.1
    act[0, 1, 0] = 7.0
    assert m.fired_units(act).tolist() == [True, False, False, False, True]


# -- gradients, weights, losses --------------------------------------------------------------------


def test_grad_norms_by_hand():
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])
    total, norms = m.grad_norms({"block_0": [a, c], "head": [b], "none": [c]})
    assert set(norms) == {"block_0", "head"}  # a group without gradients is left out
    assert norms["block_0"].item() == 5.0 and norms["head"].item() == 12.0
    assert total.item() == 13.0
    total, norms = m.grad_norms({"none": [c]})
    assert norms == {} and total.item() == 0.0


def test_grad_norms_equal_an_fp64_sum_of_squares():
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((4, 3), (5,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    total, norms = m.grad_norms({"x": params[:2], "y": params[2:]})
    squares = [sum(v * v for v in p.grad.double().flatten().tolist()) for p in params]
    assert norms["x"].item() == pytest.approx(math.sqrt(squares[0] + squares[1]), rel=1e-6)
    assert norms["y"].item() == pytest.approx(math.sqrt(squares[2]), rel=1e-6)
    assert total.item() == pytest.approx(math.sqrt(sum(squares)), rel=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite(bad):
    tensors = [torch.ones(3), torch.zeros(2, 2)]
    assert m.all_finite(tensors).item() is True
    assert m.all_finite([]).item() is True
    assert m.all_finite([torch.tensor([3e38, 3e38])]).item() is True  # huge but finite: no overflow
    tensors[1][1, 0] = bad
    assert m.all_finite(tensors).item() is False


def test_first_bad_step_keeps_the_earliest():
    never = torch.tensor(2**62)
    first = never
    for step, loss in [(0, 2.0), (1, 1.5), (2, float("nan")), (3, 1.0), (4, float("inf"))]:
        first = m.first_bad_step(first, torch.tensor([loss, 1.0]), step)
        assert first.item() == (2**62 if step < 2 else 2)
    assert m.first_bad_step(never, torch.tensor(-float("inf")), 7).item() == 7


def test_slope_spread_is_the_population_mean_and_std():
    slopes = torch.tensor([0.01, 0.03, -0.02, 0.1], dtype=torch.float16)
    mean, std = m.slope_spread(slopes)
    values = slopes.double().numpy()
    assert mean.dtype == torch.float32
    assert mean.item() == pytest.approx(values.mean(), rel=1e-6)
    assert std.item() == pytest.approx(np.std(values, ddof=0), rel=1e-6)


# -- throughput ------------------------------------------------------------------------------------


def test_tokens_per_second_and_mfu_by_hand():
    assert m.tokens_per_second(4, 3, 32, 2, 2.5) == 4 * 3 * 32 * 2 / 2.5
    assert m.tokens_per_second(1, 1, 10, 1, 4.0) == 2.5
    assert m.model_flops_utilisation(300.0, 600.0, 2e6) == 0.09


def test_saturation_counts_by_hand():
    """Below the threshold counts (strictly), the total is every coordinate, both in count_dtype."""
    slope = torch.tensor([[0.05, 0.1, 0.5], [0.0, 1.0, 0.099]])
    counts = m.saturation_counts(slope, 0.1)
    assert counts.tolist() == [3.0, 6.0] and counts.dtype == m.count_dtype(slope.device)
    assert m.saturation_counts(torch.ones(4), 0.1).tolist() == [0.0, 4.0]
