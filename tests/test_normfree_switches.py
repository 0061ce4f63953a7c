"""ReLU², SiLU and QK-norm against explicit formulas."""

import math

import pytest
import torch

from actsweep.model.gpt import GPT, GPTConfig
from actsweep.model.hooks import capture

TINY = dict(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_embd=32)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("name, formula", [
    ("relu2", lambda x: torch.where(x > 0, x * x, torch.zeros_like(x))),
    ("silu", lambda x: x / (1 + torch.exp(-x))),
])
def test_new_activations_follow_their_formula(name, formula):
    model = tiny(activation=name)
    with torch.no_grad(), capture(model, "blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_act") as cache:
        model(torch.randint(0, 97, (2, 16)))
    pre = cache["blocks.1.mlp.hook_pre"]
    torch.testing.assert_close(cache["blocks.1.mlp.hook_act"], formula(pre), rtol=1e-6, atol=1e-7)


def explicit_attention(x: torch.Tensor, attn, qk_norm: bool) -> torch.Tensor:
    """Causal attention written out: q, k RMS-normalized per head when asked, softmax, projection."""
    B, T, C = x.shape
    H = attn.n_head
    d = C // H
    qkv = x @ attn.qkv.weight.T
    if attn.qkv_bias is not None:
        qkv[..., : attn.qkv_bias.numel()] += attn.qkv_bias
    q, k, v = (t.view(B, T, H, d).transpose(1, 2) for t in qkv.split(C, dim=-1))
    if qk_norm:
        q = q / torch.sqrt(q.pow(2).mean(-1, keepdim=True) + 1e-5)
        k = k / torch.sqrt(k.pow(2).mean(-1, keepdim=True) + 1e-5)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.out(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("qk_norm", ["none", "rms"])
def test_qk_norm_is_rmsnorm_of_queries_and_keys_per_head(qk_norm):
    model = tiny(qk_norm=qk_norm, bias="qk")
    attn = model.blocks[0].attn
    x = 5 * torch.randn(2, 16, 32)
    with torch.no_grad(), capture(model, "blocks.0.attn.hook_q") as cache:
        got = attn(x)
        want = explicit_attention(x, attn, qk_norm == "rms")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    rms = cache["blocks.0.attn.hook_q"].pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3) == (qk_norm == "rms")
    assert not any(p.requires_grad for n, p in attn.named_parameters() if "norm_" in n)
