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


# -- dynamic norms ----------------------------------------------------------------------------

from scipy.special import erf  # noqa: E402  an independent erf

from actsweep.train.optim import parameter_groups  # noqa: E402


def randomise(norm) -> None:
    """Move every parameter off its initial value so the formula is tested, not the init."""
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("kind, formula", [
    ("dyt", lambda n, x: n.weight * torch.tanh(n.alpha * x) + n.bias),
    ("derf", lambda n, x: n.weight * torch.from_numpy(erf((n.alpha * x + n.shift).double().numpy())).float() + n.bias),
    ("dyisru", lambda n, x: n.weight * x / torch.sqrt(n.beta + x * x + 1e-5) + n.bias),
])
def test_dynamic_norms_follow_their_formula(kind, formula):
    model = tiny(norm=kind, final_norm=kind)
    for norm in (model.blocks[1].norm_attn, model.blocks[0].norm_mlp, model.norm_final):
        randomise(norm)
        x = 30 * torch.randn(2, 5, 32)
        with torch.no_grad():
            torch.testing.assert_close(norm(x), formula(norm, x), rtol=1e-5, atol=1e-5)


def test_dynamic_norm_defaults_are_the_official_ones_and_sites_have_their_own_alpha():
    model = tiny(norm="dyt", final_norm="dyt")
    assert [float(model.blocks[0].norm_attn.alpha), float(model.norm_final.alpha)] == [0.5, 0.5]
    model = tiny(norm="derf", final_norm="dyt", norm_alpha_attn=0.8, norm_alpha_ffn=0.2, norm_alpha_final=0.1)
    block = model.blocks[1]
    assert (float(block.norm_attn.alpha), float(block.norm_mlp.alpha), float(model.norm_final.alpha)) == \
        pytest.approx((0.8, 0.2, 0.1))
    assert float(block.norm_attn.shift) == 0.0 and block.norm_attn.alpha.shape == ()
    assert float(tiny(norm="dyisru").blocks[0].norm_attn.beta) == 100.0
    assert tiny(norm="dyt", bias="none").blocks[0].norm_attn.bias is None  # DyT's LLaMA code: no bias


def test_embedding_scale_multiplies_the_summed_embeddings_and_starts_at_sqrt_width():
    plain, scaled = tiny(norm="dyt"), tiny(norm="dyt", embedding_scale=True)
    assert float(scaled.embedding_scale.scale) == pytest.approx(math.sqrt(32))
    with torch.no_grad():
        scaled.embedding_scale.scale.fill_(3.0)
    idx = torch.randint(0, 97, (2, 16))
    inputs = []  # what reaches the first block: the (scaled) sum of token and position embeddings
    for model in (plain, scaled):
        model.blocks[0].register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
        with torch.no_grad():
            model(idx)
    torch.testing.assert_close(inputs[1], 3.0 * inputs[0])


@pytest.mark.parametrize("decay", [False, True])
def test_norm_scalars_are_weight_decayed_only_when_asked(decay):
    model = tiny(norm="derf", final_norm="dyisru", embedding_scale=True)
    groups = {g["name"]: g for g in parameter_groups(model.named_parameters(), 0.1, 0.0, "matrices", decay)}
    scalars = {id(p) for n, p in model.named_parameters() if p.dim() == 0}
    assert len(scalars) == 2 * 2 * 2 + 1 + 1  # alpha and shift of 4 block norms, beta, embedding scale
    in_decay = {id(p) for p in groups["decay"]["params"]}
    assert (scalars <= in_decay) == decay and not (scalars & in_decay if not decay else set())
    assert groups["decay"]["weight_decay"] == 0.1
