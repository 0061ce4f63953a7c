"""`sdpa_backend: eager`: attention scores as HF GPT-2's eager path and ReLU's Revival's code compute
them (q·kᵀ in the activation dtype, then /√d), so fp16 overflows where it did for the authors."""

from __future__ import annotations

import pytest
import torch

from actsweep.model.attention import ATTENTION, eager_attention
from actsweep.model.gpt import GPT, GPTConfig


def reference(q, k, v):
    """Causal softmax(q kᵀ / √d) v in float64, a loop over query rows."""
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty_like(q)
    for t in range(q.shape[-2]):
        scores = q[..., t:t + 1, :] @ k[..., :t + 1, :].transpose(-1, -2) / q.shape[-1] ** 0.5
        out[..., t:t + 1, :] = torch.softmax(scores, dim=-1) @ v[..., :t + 1, :]
    return out


def test_eager_is_causal_attention_in_float32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    assert torch.allclose(eager_attention(q, k, v, 0.0).double(), reference(q, k, v), atol=1e-6)
    assert torch.allclose(eager_attention(q, k, v, 0.0), ATTENTION["math"](q, k, v, 0.0), atol=1e-6)


@pytest.mark.parametrize("raw_dot, overflows", [(60_000.0, False), (70_000.0, True)])
def test_fp16_scores_overflow_past_65504_only_in_eager(raw_dot, overflows):
    """q = k = c·1 with c²·d = raw_dot: the fp16 product passes 65504 (inf, then NaN rows) exactly when
    raw_dot does; SDPA's math kernel, scaling before the product, stays finite either way."""
    d, T = 64, 8
    c = (raw_dot / d) ** 0.5
    q = k = torch.full((1, 1, T, d), c, dtype=torch.float16)
    v = torch.randn(1, 1, T, d).half()
    eager = eager_attention(q, k, v, 0.0)
    assert bool(torch.isfinite(eager).all()) is not overflows
    assert torch.isfinite(ATTENTION["math"](q, k, v, 0.0)).all()
    if not overflows:
        assert torch.allclose(eager.double(), reference(q, k, v), atol=2e-3)


def test_a_model_trains_with_eager_attention_and_matches_math():
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)
    math_model, eager_model = GPT(GPTConfig(**cfg, sdpa_backend="math")), GPT(GPTConfig(**cfg, sdpa_backend="eager"))
    eager_model.load_state_dict(math_model.state_dict())
    x = torch.randint(0, 50, (4, 16))
    for model in (math_model, eager_model):
        model(x).logsumexp(-1).mean().backward()
    assert torch.allclose(eager_model(x), math_model(x), atol=1e-5)
    grads = [torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (math_model, eager_model)]
    assert torch.allclose(*grads, atol=1e-5)
