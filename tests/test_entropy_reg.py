"""The entropy regulariser against the official code (Nandan91/entropy-guided-attention-llm,
entropy_regularization.py, ported below loop for loop), its named options against explicit loops,
and the attention paths: exact only when it is on."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from actsweep.model.gpt import GPT, GPTConfig
from actsweep.train.module import ActSweepModule
from helpers import ScalarLogger

TINY = dict(vocab_size=37, block_size=12, n_layer=3, n_head=4, n_embd=32, dropout=0.0)


def official_loss(attentions, weights, num_heads, num_layers, loss_coeff=1e-5, tolerance_margin_factor=0.20):
    """EntropyRegularization.compute_loss of the official code, as published."""
    context_size = attentions[0].shape[-1]
    max_entropy = torch.log(torch.tensor(float(context_size)))
    tolerance_margin = tolerance_margin_factor * max_entropy
    entropy_reg_loss = 0
    for attn_mat in attentions:
        ent_val = -torch.nansum(attn_mat * torch.log(attn_mat + 1e-9), dim=-1)
        layer_entropy_reg_loss = 0
        for head_idx in range(num_heads):
            head_entropy = ent_val[:, head_idx, :]
            threshold = weights[head_idx] * max_entropy
            deviation = head_entropy - threshold
            penalty = torch.square(torch.where(torch.abs(deviation) > tolerance_margin, deviation, torch.zeros_like(deviation)))
            layer_entropy_reg_loss += penalty.sum()
        layer_entropy_reg_loss /= num_heads
        entropy_reg_loss += layer_entropy_reg_loss
    entropy_reg_loss /= num_layers
    return loss_coeff * entropy_reg_loss


def model_and_probs(**overrides):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "entropy_reg": True, **overrides})).train()
    with torch.no_grad():  # spread the thresholds so heads differ
        for w in model.entropy_reg.thresholds:
            w.copy_(torch.rand_like(w))
    idx = torch.randint(0, 37, (3, 12))
    logits = model(idx)
    probs = [attn.probs for attn in model.attention_modules]
    return model, idx, logits, probs


def test_default_penalty_is_the_official_codes():
    model, _, _, probs = model_and_probs(qk_norm="none")
    weights = model.entropy_reg.thresholds[0]
    penalty, layers = model.entropy_penalty()
    want = official_loss([p.detach() for p in probs], weights.detach(), 4, 3)
    assert want > 0
    torch.testing.assert_close(penalty.detach(), want, rtol=1e-5, atol=0)
    torch.testing.assert_close(1e-5 * layers.mean(), want, rtol=1e-5, atol=0)


def explicit(probs, weights_of_layer, maximum, reduce, tol=0.2):
    """The options written as loops over layers, heads, batch rows and query positions."""
    layers = []
    for layer, p in enumerate(probs):
        B, H, T, _ = p.shape
        heads = []
        for h in range(H):
            terms = []
            for b in range(B):
                for t in range(T):
                    top = math.log(T) if maximum == "context" else math.log(t + 1)
                    row = p[b, h, t]
                    ent = -(row * torch.log(row + 1e-9)).sum().item()
                    dev = ent - weights_of_layer(layer)[h].item() * top
                    terms.append(dev * dev if abs(dev) > tol * top else 0.0)
            heads.append(sum(terms) / (len(terms) if reduce == "mean" else 1))
        layers.append(sum(heads) / H)
    return torch.tensor(layers)


@pytest.mark.parametrize("thresholds, maximum, reduce", [("layer", "context", "sum"), ("shared", "causal", "sum"),
                                                          ("layer", "causal", "mean")])
def test_named_options_equal_explicit_loops(thresholds, maximum, reduce):
    model, _, _, probs = model_and_probs(entropy_reg_thresholds=thresholds, entropy_reg_max=maximum, entropy_reg_reduce=reduce)
    ws = model.entropy_reg.thresholds
    assert len(ws) == (3 if thresholds == "layer" else 1)
    want = explicit([p.detach() for p in probs], lambda layer: ws[layer % len(ws)].detach(), maximum, reduce)
    _, layers = model.entropy_penalty()
    torch.testing.assert_close(layers, want.float(), rtol=1e-4, atol=1e-6)


def test_exact_path_only_when_on_and_it_computes_what_the_fused_kernel_does(monkeypatch):
    torch.manual_seed(0)
    off = GPT(GPTConfig(**TINY)).train()
    on = GPT(GPTConfig(**TINY, entropy_reg=True)).train()
    on.load_state_dict(off.state_dict(), strict=False)
    idx = torch.randint(0, 37, (2, 12))
    expected = off(idx)
    assert all(attn.probs is None for attn in off.attention_modules)

    def fused(*args, **kwargs):
        raise AssertionError("a regularised training forward must not use scaled_dot_product_attention")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused)
    torch.testing.assert_close(on(idx), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), pytest.raises(AssertionError, match="must not use"):
        on(idx)  # evaluation forwards keep the fused kernel (the code skips the penalty in evaluation)


def test_training_minimises_the_penalty_and_logs_it_per_layer(tmp_path):
    torch.manual_seed(0)
    module = ActSweepModule(**TINY, entropy_reg=True, entropy_reg_coeff=1.0, lr=1e-2, weight_decay=0.0)
    before = module.model.entropy_reg.thresholds[0].detach().clone()
    data = torch.randint(0, 37, (8, 13), generator=torch.Generator().manual_seed(0))
    recorder = ScalarLogger()
    L.Trainer(max_steps=2, logger=recorder, accelerator="cpu", devices=1, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
              default_root_dir=tmp_path).fit(module, DataLoader([(r[:-1], r[1:]) for r in data], batch_size=8))
    assert not torch.equal(module.model.entropy_reg.thresholds[0].detach(), before)  # learnable thresholds
    layers = [recorder.last(f"train/entropy_reg/layer_{i}") for i in range(3)]
    assert recorder.last("train/entropy_reg") == pytest.approx(sum(layers) / 3, rel=1e-5)
    assert "train/loss" in recorder.scalars
