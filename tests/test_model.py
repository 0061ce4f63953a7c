"""The GPT against independent references: causality, GPT-2 parity, switch bookkeeping."""

import pytest
import torch
from torch import nn

from actsweep.errors import ConfigError
from actsweep.model.hooks import capture, hook_points, hooks, run_with_cache
from actsweep.model.gpt import GPT, GPTConfig

TINY = dict(vocab_size=97, block_size=16, n_layer=3, n_head=4, n_embd=32)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).eval()


@pytest.mark.parametrize("activation", ["relu", "gelu", "learnable_leaky_relu"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm", "none"])
def test_changing_later_tokens_leaves_earlier_logits_unchanged(activation, norm):
    model = tiny(activation=activation, norm=norm, bias="qk")
    idx = torch.randint(0, 97, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t + 1 :] = torch.randint(0, 97, (2, 16 - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def to_hf_gpt2(model: GPT):
    """Copy our weights into transformers' GPT2LMHeadModel built from a config (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                   n_head=c.n_head, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                   attn_pdrop=0.0, layer_norm_epsilon=c.norm_eps, bos_token_id=0, eos_token_id=0)
    ).eval()
    sd = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.wpe.weight,
          "transformer.ln_f.weight": model.norm_final.weight, "transformer.ln_f.bias": model.norm_final.bias,
          "lm_head.weight": model.lm_head.weight}
    for i, b in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        # HF's Conv1D stores weights as (in, out): transpose our Linear weights.
        sd |= {p + "ln_1.weight": b.norm_attn.weight, p + "ln_1.bias": b.norm_attn.bias,
               p + "attn.c_attn.weight": b.attn.qkv.weight.T, p + "attn.c_attn.bias": b.attn.qkv_bias,
               p + "attn.c_proj.weight": b.attn.out.weight.T, p + "attn.c_proj.bias": b.attn.out.bias,
               p + "ln_2.weight": b.norm_mlp.weight, p + "ln_2.bias": b.norm_mlp.bias,
               p + "mlp.c_fc.weight": b.mlp.fc.weight.T, p + "mlp.c_fc.bias": b.mlp.fc.bias,
               p + "mlp.c_proj.weight": b.mlp.out.weight.T, p + "mlp.c_proj.bias": b.mlp.out.bias}
    result = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not result.unexpected_keys and all("attn.bias" in k or "masked_bias" in k for k in result.missing_keys)
    return hf


def test_layernorm_gelu_tanh_full_bias_model_is_gpt2():
    model = tiny(activation="gelu_tanh", norm="layernorm", bias="all", tie_weights=True)
    with torch.no_grad():  # non-zero biases so that every bias is really compared
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    hf = to_hf_gpt2(model)
    idx = torch.randint(0, 97, (3, 16))
    with torch.no_grad():
        diff = (model(idx) - hf(idx).logits).abs().max().item()
    assert diff <= 1e-4


def test_layernorm_free_has_no_block_norm_parameters_but_keeps_final_norm():
    model = tiny(norm="none")
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("blocks.") and ".norm" in n for n in names)
    assert "norm_final.weight" in names
    assert isinstance(model.blocks[0].norm_attn, nn.Identity)
    assert not any("norm" in n for n, _ in tiny(norm="none", final_norm="none").named_parameters())


def slope_params(model: GPT) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "slope" in n}


@pytest.mark.parametrize("tied", [True, False])
def test_padded_vocabulary_logits_are_the_real_rows_of_the_full_product(tied):
    model = tiny(pad_vocab_multiple=64, tie_weights=tied, lm_head_bias=not tied)  # 97 -> 128 rows
    idx = torch.randint(0, 97, (2, 16))
    logits = model(idx)
    x = model.wte(idx) + model.wpe(torch.arange(16))
    for block in model.blocks:
        x = block(x)
    full = model.lm_head(model.norm_final(x))  # all 128 rows, computed independently
    assert full.shape[-1] == 128 and logits.shape == (2, 16, 97) and logits.is_contiguous()
    torch.testing.assert_close(logits, full[..., :97], rtol=0, atol=1e-6)
    logits.logsumexp(-1).sum().backward()
    assert model.lm_head.weight.grad[97:].abs().sum() == 0  # padded rows take no part in the softmax
    if not tied:
        assert model.lm_head.bias.grad[97:].abs().sum() == 0 and model.lm_head.bias.grad[:97].abs().sum() > 0


def test_global_slope_is_one_parameter_shared_by_all_layers():
    model = tiny(activation="learnable_leaky_relu", slope_scope="global", slope_init=0.25)
    slopes = slope_params(model)
    assert list(slopes) == ["slopes.shared"] and slopes["slopes.shared"].numel() == 1
    assert all(b.mlp.act.slope is model.slopes.shared for b in model.blocks)
    x = -torch.ones(4)
    assert torch.equal(model.blocks[2].mlp.act(x), -0.25 * torch.ones(4))


def test_layer_scope_has_one_slope_per_layer_and_neuron_scope_one_per_unit():
    layer = slope_params(tiny(activation="learnable_leaky_relu", slope_scope="layer"))
    assert len(layer) == 3 and all(p.numel() == 1 for p in layer.values())
    neuron = slope_params(tiny(activation="learnable_leaky_relu", slope_scope="neuron"))
    assert len(neuron) == 3 and all(p.shape == (4 * 32,) for p in neuron.values())


def test_per_layer_activation_list_builds_those_modules():
    model = tiny(activation=["relu", "gelu_tanh", "learnable_leaky_relu"])
    acts = [b.mlp.act for b in model.blocks]
    assert isinstance(acts[0], nn.ReLU)
    assert isinstance(acts[1], nn.GELU) and acts[1].approximate == "tanh"
    assert len(slope_params(model)) == 1
    with pytest.raises(ConfigError, match="one name per layer"):
        GPTConfig(**{**TINY, "activation": ["relu", "gelu"]})


def test_bias_modes():
    qk = tiny(bias="qk")
    assert qk.blocks[0].attn.qkv_bias.numel() == 2 * 32
    projection_biases = [n for n, p in qk.named_parameters() if n.endswith("bias") and "norm" not in n]
    assert projection_biases == [f"blocks.{i}.attn.qkv_bias" for i in range(3)]
    assert qk.norm_final.bias is not None  # norms keep their bias, as in HF GPT-2
    assert not [n for n, _ in tiny(bias="none").named_parameters() if "bias" in n]


def test_gpt2_initialisation_scales_residual_projections():
    model = tiny(n_layer=8, n_embd=256, n_head=4, vocab_size=5000)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.out.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert model.lm_head.weight is model.wte.weight


@pytest.mark.parametrize(
    "overrides, phrase",
    [({"activation": "swish"}, "relu, gelu, gelu_tanh, leaky_relu, learnable_leaky_relu, relu2, silu"),
     ({"norm": "batchnorm"}, "layernorm, rmsnorm, none"),
     ({"slope_scope": "head"}, "global, layer, neuron"),
     ({"n_head": 5}, "divisible by n_head"),
     ({"bias": "some"}, "all, qk, no_qkv, none"),
     ({"dropout_sites": "heads"}, "all, blocks, embedding"),
     ({"init": "xavier"}, "gpt2, normal")],
)
def test_bad_config_names_what_is_allowed(overrides, phrase):
    with pytest.raises(ConfigError, match=phrase):
        GPTConfig(**{**TINY, **overrides})


def test_hook_points_capture_ffn_activations_and_are_removed():
    model = tiny(activation="relu")
    idx = torch.randint(0, 97, (2, 16))
    with capture(model, "blocks.*.mlp.hook_pre", "blocks.*.mlp.hook_act") as cache:
        model(idx)
    assert len(cache) == 6
    torch.testing.assert_close(cache["blocks.1.mlp.hook_act"], cache["blocks.1.mlp.hook_pre"].clamp(min=0))
    assert all(not p._forward_hooks for p in hook_points(model).values())
    with pytest.raises(RuntimeError), hooks(model, {"blocks.0.hook_resid": lambda t, n: None}):
        raise RuntimeError("hooks must be removed even when the block fails")
    assert all(not p._forward_hooks for p in hook_points(model).values())


def test_hook_points_know_their_names_and_run_with_cache_returns_every_one():
    model = tiny(activation="relu").eval()
    points = hook_points(model)
    assert all(point.name == name for name, point in points.items())
    assert model.blocks[1].mlp.hook_act.layer == 1 and model.blocks[0].attn.hook_q.layer == 0
    assert "name='blocks.1.hook_resid'" in repr(model.blocks[1])
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        logits, cache = run_with_cache(model, idx)
        torch.testing.assert_close(logits, model(idx))
        # the last block's residual stream is what the final norm and the head turn into the logits
        last = cache[f"blocks.{model.cfg.n_layer - 1}.hook_resid"]
        torch.testing.assert_close(model.lm_head(model.norm_final(last))[..., :97], logits)
    assert set(cache) == set(points) and all(not t.requires_grad for t in cache.values())
    _, some = run_with_cache(model, idx, names=("blocks.0.*",))
    assert set(some) == {n for n in points if n.startswith("blocks.0.")}
    assert all(not p._forward_hooks for p in points.values())


def test_hook_ablates_every_matching_layer():
    """Zeroing every layer's FFN activation equals zeroing every FFN output projection's weight
    (out(0) = its bias, as out(h) with a zero weight): the reference ablation, done on the weights."""
    model = tiny(activation="gelu", bias="all")
    idx = torch.randint(0, 97, (1, 16))
    seen = []
    with torch.no_grad():
        base = model(idx)
        with hooks(model, {"blocks.*.mlp.hook_act": lambda t, n: seen.append(n) or torch.zeros_like(t)}):
            ablated = model(idx)
        for block in model.blocks:
            block.mlp.out.weight.zero_()
        reference = model(idx)
    assert seen == [f"blocks.{i}.mlp.hook_act" for i in range(3)]
    assert not torch.allclose(base, ablated)
    torch.testing.assert_close(ablated, reference, rtol=0, atol=0)


def explicit_loss(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same network written out with an explicit causal softmax: the reference for gradients."""
    c = model.cfg
    x = model.wte(idx) + model.wpe(torch.arange(idx.size(1)))
    T, d = idx.size(1), c.n_embd // c.n_head
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for b in model.blocks:
        h = b.norm_attn(x)
        q, k, v = torch.nn.functional.linear(h, b.attn.qkv.weight).view(*h.shape[:2], 3, c.n_head, d).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        p = torch.softmax((q @ k.transpose(-1, -2) / d**0.5).masked_fill(~mask, float("-inf")), -1)
        x = x + b.attn.out((p @ v).transpose(1, 2).reshape(x.shape))
        x = x + b.mlp(b.norm_mlp(x))
    logits = model.lm_head(model.norm_final(x))
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def huge_logits(model: GPT) -> GPT:
    """Scale q and k so that attention logits reach ~1e7 (torch 2.13's CPU flash: gradients 200% off)."""
    with torch.no_grad():
        for b in model.blocks:
            b.attn.qkv.weight[: 2 * 32] *= 1e6
    return model


def fc_grads(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the first FFN weight through the model's kernels and through an explicit softmax."""
    ours = torch.autograd.grad(torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), targets.flatten()),
                               model.blocks[0].mlp.fc.weight)[0]
    return ours, torch.autograd.grad(explicit_loss(model, idx, targets), model.blocks[0].mlp.fc.weight)[0]


def test_math_attention_backend_gives_true_gradients_at_huge_attention_logits():
    """LayerNorm-free models can grow attention logits past 1e7, where kernels that recompute scores
    in backward go wrong; `sdpa_backend="math"` must match an explicit softmax there."""
    model = huge_logits(tiny(norm="none", bias="none", activation="gelu", sdpa_backend="math").train())
    idx, targets = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    torch.testing.assert_close(*fc_grads(model, idx, targets), rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="adaptive, auto, flash, efficient, cudnn, math"):
        GPTConfig(**TINY, sdpa_backend="fast")


def test_adaptive_attention_switches_to_math_at_huge_logits_and_gradients_become_true():
    model = huge_logits(tiny(norm="none", bias="none", activation="gelu").train())
    assert model.cfg.sdpa_backend == "adaptive" and not model.exact_attention
    idx, targets = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    fused, reference = fc_grads(model, idx, targets)  # the training step that measures the logits
    assert not torch.allclose(fused, reference, rtol=1e-2)  # the fused kernel is wrong here: why we switch
    assert model.logit_peaks().min() > 1e6
    assert model.check_attention_logits() and model.exact_attention
    torch.testing.assert_close(*fc_grads(model, idx, targets), rtol=1e-4, atol=1e-6)
    assert model.logit_peaks().max() == 0  # math for good: no more tracking


def test_adaptive_attention_keeps_fused_kernels_while_logits_are_small():
    model = tiny(norm="none").train()
    idx = torch.randint(0, 97, (4, 16))
    with capture(model, "blocks.*.attn.hook_[qk]") as acts:
        model(idx).sum().backward()
    d = 32 // 4
    for i in range(model.cfg.n_layer):  # the bound is an upper bound of the true largest logit
        q, k = acts[f"blocks.{i}.attn.hook_q"], acts[f"blocks.{i}.attn.hook_k"]
        true_max = (q @ k.transpose(-1, -2) / d**0.5).abs().amax()
        assert true_max <= model.logit_peaks()[i] < 1e3
    assert not model.check_attention_logits()
    assert [b.attn.sdpa_backend for b in model.blocks] == ["adaptive"] * 3
    with torch.no_grad():  # forwards without a backward are not tracked
        huge_logits(model)(idx)
    assert model.logit_peaks().max() == 0


def test_an_explicit_attention_backend_is_never_switched():
    model = huge_logits(tiny(norm="none", sdpa_backend="auto").train())
    model(torch.randint(0, 97, (2, 16))).sum().backward()
    model.load_attention_state({"exact": True, "peaks": torch.full((3,), 1e9)})
    assert not model.check_attention_logits(1e9)
    assert [b.attn.sdpa_backend for b in model.blocks] == ["auto"] * 3


def test_attention_state_round_trip():
    model = tiny(exact_attention_above=5.0).train()
    model(torch.randint(0, 97, (2, 16))).sum().backward()
    state = model.attention_state()
    fresh = tiny(exact_attention_above=5.0)
    fresh.load_attention_state(state)
    torch.testing.assert_close(fresh.logit_peaks(), model.logit_peaks(), rtol=0, atol=0)
    assert fresh.check_attention_logits() == model.check_attention_logits()
    with pytest.raises(ConfigError, match="exact_attention_above must be positive"):
        GPTConfig(**TINY, exact_attention_above=0)


def test_a_one_element_slope_promotes_fp16_as_the_released_one_does():
    """Under fp16 autocast the released (1, 1, 1) slope runs x·slope and its gradient in fp32; a 0-dim
    slope would stay in fp16, where the slope's gradient (a sum over every negative input) overflows."""
    from actsweep.model.activations import LeakyReLU

    x = torch.full((4, 128, 64), -100.0, dtype=torch.float16)
    released_slope = torch.nn.Parameter(torch.full((1, 1, 1), 0.01))
    ours = LeakyReLU(torch.nn.Parameter(torch.tensor(0.01)))
    with torch.autocast("cpu", dtype=torch.float16):
        expected = torch.where(x > 0, x, x * released_slope)  # the released formula's promotion
        out = ours(x)
    expected.sum().backward()
    out.sum().backward()
    assert out.dtype == expected.dtype == torch.float32 and torch.equal(out, expected)
    assert ours.slope.grad.item() == released_slope.grad.item() == -100.0 * x.numel()  # -3.3e6: finite
    zero_dim = torch.nn.Parameter(torch.tensor(0.01))  # what a 0-dim slope used as it is leaves in fp16
    with torch.autocast("cpu", dtype=torch.float16):
        kept = torch.where(x > 0, x, x * zero_dim)
    kept.float().sum().backward()
    assert kept.dtype == torch.float16 and not torch.isfinite(zero_dim.grad)
