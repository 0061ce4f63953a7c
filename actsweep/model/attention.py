"""Attention's kernels, by name (`GPTConfig.sdpa_backend`), and the bound that `adaptive` watches.

Fused kernels (flash, memory-efficient) recompute the scores in their backward pass; once attention
logits reach ~1e7, which LayerNorm-free models can, the recomputed softmax differs from the forward
one by exp(ulp) and their gradients are garbage (seen on CPU: 1e19 instead of 1e-4). "math" keeps the
forward's probabilities. "adaptive" starts as "auto" and moves to "math" for good once
`GPT.check_attention_logits` sees a logit bound past `GPTConfig.exact_attention_above`. "eager" is not
SDPA: the scores as HF GPT-2's eager attention and ReLU's Revival's code compute them.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

FUSED_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# The kernels `scaled_dot_product_attention` may choose from under each name.
SDPA_BACKENDS = {
    "adaptive": FUSED_FIRST,
    "auto": FUSED_FIRST,
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "math": [SDPBackend.MATH],
}


def kernels(backend: str, dtype: torch.dtype) -> list[SDPBackend]:
    """The SDPA kernels a `sdpa_backend` may use for `dtype`: no fused kernel has float64 (an
    exactness check, not a speed run), so float64 always takes `math`."""
    return [SDPBackend.MATH] if dtype == torch.float64 else SDPA_BACKENDS[backend]


def logit_bound(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Upper bound on |q·k|/sqrt(d) over a batch (B, H, T, d), by Cauchy–Schwarz: the largest over
    heads of max‖q‖ · max‖k‖ / sqrt(d). Two norms of q and k, in fp32 or wider: no (T, T) scores."""
    wide = torch.promote_types(q.dtype, torch.float32)  # fp16 norms overflow; float64 stays float64
    q_norm = torch.linalg.vector_norm(q.detach(), dim=-1, dtype=wide).amax(dim=(0, 2))
    k_norm = torch.linalg.vector_norm(k.detach(), dim=-1, dtype=wide).amax(dim=(0, 2))
    return (q_norm * k_norm).amax() / math.sqrt(q.shape[-1])


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float, backend: str) -> torch.Tensor:
    with sdpa_kernel(kernels(backend, q.dtype)):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, drop: float) -> torch.Tensor:
    """Causal attention as HF GPT-2's eager path (transformers 4.30 `GPT2Attention._attn`) and ReLU's
    Revival's code (model_utils.py:147,149) compute it: q·kᵀ in the activation dtype (fp16 under
    autocast), *then* divided by √d, masked with the dtype's lowest value, softmax, cast to v's dtype.
    Under fp16 the scores overflow once raw q·k passes 65504, where SDPA's math kernel (fp32 scores
    after scaling q) never does: the authors' LN-free NaNs need this path."""
    T = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2))
    scores = scores / torch.full([], v.shape[-1] ** 0.5, dtype=scores.dtype, device=scores.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype, device=q.device))
    probs = torch.softmax(scores, dim=-1).type(v.dtype)
    return torch.matmul(F.dropout(probs, drop), v)


Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
ATTENTION: dict[str, Attention] = {
    **{name: functools.partial(sdpa_attention, backend=name) for name in SDPA_BACKENDS},
    "eager": eager_attention,
}
AttentionName = Literal[tuple(ATTENTION)]
