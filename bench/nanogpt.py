"""The yardstick: a plain nanoGPT-style GPT and training loop, written without any actsweep code.

Same architecture as actsweep's defaults (pre-norm blocks, LayerNorm with biases, biased linears,
exact GELU, tied embedding, GPT-2 init), `torch.randint` batches, and the optimizer of the shipped
configs: AdamW with weight decay on matrices only, linear warmup then cosine to `min_lr_ratio` × lr.
Nothing here imports actsweep: if actsweep's model, data or loop were slow, this would not be.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    batch_size: int = 32
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup: float = 0.05  # fraction of the run
    min_lr_ratio: float = 0.1


class Block(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.mlp_proj = nn.Linear(4 * c.n_embd, c.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias") and "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def lr_at(step: int, max_steps: int, c: Config) -> float:
    """Linear warmup from 0, then cosine from lr to min_lr_ratio × lr at max_steps."""
    warmup = round(c.warmup * max_steps)
    if step < warmup:
        return c.lr * step / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(model: nn.Module, c: Config, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=c.lr, betas=c.betas, fused=device.type == "cuda")


def train(c: Config, max_steps: int, on_step_end: Callable[[int], None] = lambda step: None, device: str = "cpu",
          seed: int = 0, autocast: torch.dtype | None = None, compile: bool = False) -> None:
    """Train for `max_steps`, calling `on_step_end(steps done)` after each optimizer step."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = GPT(c).to(dev)
    opt = optimizer(model, c, dev)
    step_fn = torch.compile(model) if compile else model
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast is torch.float16)
    for step in range(max_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, max_steps, c)
        batch = torch.randint(0, c.vocab_size, (c.batch_size, c.block_size + 1), device=dev)
        with torch.autocast(dev.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = step_fn(batch[:, :-1], batch[:, 1:])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        on_step_end(step + 1)
