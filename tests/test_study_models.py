"""The two studies' models from our switches, against independent re-implementations of their code.

`BlogGPT` is the blog's `model.py` (ARC345/llm-lab @ c3886e3, nanoGPT-lecture style: one Linear per
head for q, k and v without bias, an output projection and FFN with biases, an untied LM head with a
bias, no embedding dropout, `_init_weights` touching Linears only). Our model with the blog_code
switches and the same weights must give the same logits.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from actsweep.errors import ConfigError
from actsweep.model.gpt import GPT, GPTConfig

V, T, C, H, L = 41, 16, 48, 3, 2
BLOG = dict(bias="no_qkv", lm_head_bias=True, tie_weights=False, dropout_sites="blocks", init="normal",
            embedding_init_std=1.0)


class BlogHead(nn.Module):
    def __init__(self, head_size: int) -> None:
        super().__init__()
        self.key, self.query, self.value = (nn.Linear(C, head_size, bias=False) for _ in range(3))

    def forward(self, x):
        q, k, v = self.query(x), self.key(x), self.value(x)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class BlogBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList(BlogHead(C // H) for _ in range(H))
        self.proj = nn.Linear(C, C)
        self.ffwd = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)

    def forward(self, x):
        x = x + self.proj(torch.cat([h(self.ln1(x)) for h in self.heads], dim=-1))
        return x + self.ffwd(self.ln2(x))


class BlogGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token_embedding_table, self.position_embedding_table = nn.Embedding(V, C), nn.Embedding(T, C)
        self.blocks = nn.Sequential(*(BlogBlock() for _ in range(L)))
        self.ln_f, self.lm_head = nn.LayerNorm(C), nn.Linear(C, V)

    def forward(self, idx):
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(idx.size(1)))
        return self.lm_head(self.ln_f(self.blocks(x)))


def blog_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, activation="gelu",
                         dropout=0.2, **BLOG))


def copy_into_blog(ours: GPT) -> BlogGPT:
    ref = BlogGPT().eval()
    hs = C // H
    with torch.no_grad():
        ref.token_embedding_table.weight.copy_(ours.wte.weight)
        ref.position_embedding_table.weight.copy_(ours.wpe.weight)
        for mine, theirs in zip(ours.blocks, ref.blocks):
            q, k, v = mine.attn.qkv.weight.split(C)
            for h, head in enumerate(theirs.heads):
                for linear, w in ((head.query, q), (head.key, k), (head.value, v)):
                    linear.weight.copy_(w[h * hs:(h + 1) * hs])
            pairs = [(theirs.proj, mine.attn.out), (theirs.ffwd[0], mine.mlp.fc), (theirs.ffwd[2], mine.mlp.out),
                     (theirs.ln1, mine.norm_attn), (theirs.ln2, mine.norm_mlp)]
            for a, b in pairs:
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias.detach().clone().normal_())  # non-zero: every bias really compared
                b.bias.copy_(a.bias)
        for a, b in ((ref.ln_f, ours.norm_final), (ref.lm_head, ours.lm_head)):
            a.weight.copy_(b.weight)
            b.bias.normal_()
            a.bias.copy_(b.bias)
    return ref


def test_blog_code_switches_give_the_blogs_model():
    ours = blog_model().eval()
    assert ours.blocks[0].attn.qkv_bias is None and ours.lm_head.bias is not None
    assert ours.lm_head.weight is not ours.wte.weight
    ref = copy_into_blog(ours)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    idx = torch.randint(0, V, (2, T))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx), rtol=0, atol=1e-5)


def settings(path: str) -> dict:
    """A config file's settings by dotted key (lists, such as the callbacks, kept whole)."""
    return pd.json_normalize(yaml.safe_load(Path(path).read_text())).iloc[0].to_dict()


def test_blog_is_blog_code_with_the_posts_own_statements_only():
    """configs/blog.yaml: what the post states (GPT-2 BPE, its vocabulary 50,304 = 50,257 padded to a
    multiple of 64, betas 0.9/0.95), everything it leaves unsaid as blog_code.yaml (its code)."""
    code, post = settings("configs/blog_code.yaml"), settings("configs/blog.yaml")
    differ = {k: (code.get(k), post.get(k)) for k in code.keys() | post.keys() if code.get(k) != post.get(k)}
    assert differ == {"data.tokenizer": ("char", "gpt2"), "model.betas": ([0.9, 0.999], [0.9, 0.95]),
                      "model.pad_vocab_multiple": (None, 64), "trainer.logger.init_args.name": ("blog_code", "blog")}


def test_blog_code_dropout_sites_and_initialisation():
    model = blog_model()
    assert model.drop.p == 0.0  # no embedding dropout in the blog's code
    block = model.blocks[0]
    assert block.attn.dropout == block.attn.resid_drop.p == block.mlp.drop.p == 0.2
    # Embeddings keep torch's N(0, 1) (the blog's _init_weights touches Linears only); no residual scaling.
    torch.manual_seed(1)
    big = GPT(GPTConfig(vocab_size=4000, block_size=128, n_layer=8, n_head=4, n_embd=256, **BLOG))
    assert big.wte.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert big.wpe.weight.std().item() == pytest.approx(1.0, rel=0.02)
    for linear in (big.blocks[0].attn.out, big.blocks[7].mlp.out, big.blocks[3].mlp.fc, big.lm_head):
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert not big.lm_head.bias.any()


def test_revival_switches_embedding_dropout_only_and_unscaled_blocks():
    with open("configs/revival.yaml") as f:
        model_cfg = yaml.safe_load(f)["model"]
    fields = {k: v for k, v in model_cfg.items() if k in GPTConfig.__dataclass_fields__}
    torch.manual_seed(1)
    model = GPT(GPTConfig(**{**fields, "n_layer": 8, "n_embd": 256, "n_head": 4, "vocab_size": 4000}))
    assert model.drop.p == 0.1
    block = model.blocks[0]
    assert block.attn.dropout == block.attn.resid_drop.p == block.mlp.drop.p == 0.0
    assert model.blocks[0].mlp.act.approximate == "none"  # HF's "gelu" is the exact erf GELU
    for linear in (model.blocks[0].attn.out, model.blocks[7].mlp.out):  # built after HF's post_init: unscaled
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05) and model.lm_head.weight is model.wte.weight


def test_a_tied_head_cannot_take_an_embedding_std():
    with pytest.raises(ConfigError, match="tie_weights false"):
        GPTConfig(tie_weights=True, embedding_init_std=1.0)
