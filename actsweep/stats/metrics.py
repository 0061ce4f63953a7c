"""The arithmetic behind every number the statistics callbacks log, as pure tensor functions.

Tensors in, tensors out: no trainer, no hooks, no collectives (the callbacks reduce across processes
before or after calling these). Each function has fast tests against an independent computation
(tests/test_metrics.py) and is covered by the mutation run (bench/mutation.sh).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

from actsweep.stats.common import count_dtype

N_BANDS = 4

# -- attention entropy -----------------------------------------------------------------------------


def causal_uniform_entropy(T: int) -> float:
    """Mean entropy of a perfectly uniform causal head over T queries: mean of ln(t), t=1..T = ln(T!)/T."""
    return math.lgamma(T + 1) / T


def causal_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """fp32 attention logits q kᵀ / sqrt(d), (B, H, T, T), with -inf above the diagonal."""
    T, d = q.shape[-2], q.shape[-1]
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(d)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return s.masked_fill(~causal, float("-inf"))


def scores_entropy(s: torch.Tensor) -> torch.Tensor:
    """(B, H) entropy in nats of softmax over causal scores, averaged over query positions.

    logsumexp(s) - sum softmax(s) * s rather than -sum p log p: no `p + eps`, and exact where p
    underflows to 0 (masked entries contribute 0)."""
    p = torch.softmax(s, dim=-1)
    expected = (p * s.masked_fill(s.isneginf(), 0.0)).sum(-1)  # masked: p = 0 and s = -inf, so 0 by definition
    return (torch.logsumexp(s, dim=-1) - expected).mean(-1)


def head_entropy(q: torch.Tensor, k: torch.Tensor, reduce_batch: bool = True) -> torch.Tensor:
    """Entropy (nats) of causal softmax(q kᵀ / sqrt(d)) per head, averaged over query positions.

    q, k: (B, H, T, d). Returns (H,), or (B, H) without `reduce_batch`. Scores are built in fp32."""
    entropy = scores_entropy(causal_scores(q, k))
    return entropy.mean(0) if reduce_batch else entropy


def max_logit(s: torch.Tensor) -> torch.Tensor:
    """Largest |logit| among causal scores: past ~1e6, fused kernels' gradients go wrong (README)."""
    return s.masked_fill(s.isneginf(), 0.0).abs().amax()


def entropy_bands(values: torch.Tensor, top: float | torch.Tensor) -> torch.Tensor:
    """Share of heads in [0, top/4), [top/4, top/2), [top/2, 3top/4), [3top/4, top] (top inclusive);
    all NaN when a value scaled by `top` is not finite (a NaN or infinite value, a NaN or zero `top`: a
    diverged model has no bands, and says so; an infinite `top` puts finite values in the first band)."""
    scaled = values.flatten().float() / top * N_BANDS
    if not scaled.isfinite().all():
        return torch.full((N_BANDS,), float("nan"))
    band = scaled.floor().clamp(0, N_BANDS - 1).long()
    return torch.bincount(band, minlength=N_BANDS).float() / band.numel()


# -- FFN activations and the residual stream -------------------------------------------------------


def activation_sums(act: torch.Tensor) -> torch.Tensor:
    """[number of outputs <= 0, sum of outputs, number of outputs] of one layer's activations,
    accumulated in `count_dtype` (no fp32 or bf16 rounding of counts and sums)."""
    dtype = count_dtype(act.device)
    n = act.new_full((), act.numel(), dtype=dtype)  # a fill on the device, not a host copy
    return torch.stack([(act <= 0).sum(dtype=dtype), act.sum(dtype=dtype), n])


def square_sums(x: torch.Tensor) -> torch.Tensor:
    """[sum of squares, number of elements] of a residual stream: the parts of its RMS."""
    dtype = count_dtype(x.device)
    n = x.new_full((), x.numel(), dtype=dtype)
    return torch.stack([torch.linalg.vector_norm(x, dtype=dtype).square(), n])  # upcast inside: no fp64 copy of x


def ffn_ratios(act_sums: torch.Tensor, sq_sums: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer inactive share, activation mean and residual RMS from (L, 3) and (L, 2) sums."""
    return {
        "inactive_frac": (act_sums[:, 0] / act_sums[:, 2]).float(),
        "act_mean": (act_sums[:, 1] / act_sums[:, 2]).float(),
        "rms": (sq_sums[:, 0] / sq_sums[:, 1]).sqrt().float(),
    }


def fired_units(act: torch.Tensor, fired: torch.Tensor | None = None) -> torch.Tensor:
    """Per hidden unit, whether it was > 0 anywhere in `act` (..., hidden) or already in `fired`."""
    now = (act > 0).reshape(-1, act.shape[-1]).any(0)
    return now if fired is None else fired | now


def never_fired_share(fired: torch.Tensor) -> torch.Tensor:
    """Share of units never > 0 per layer, from (L, hidden) "ever fired" masks."""
    return 1.0 - fired.float().mean(1)


# -- gradients, weights, losses --------------------------------------------------------------------


def grad_norms(groups: Mapping[str, Sequence[torch.Tensor]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total L2 norm of all gradients and the norm of each group (what `clip_grad_norm_` returns).

    Groups without gradients are left out; the total is the norm of the group norms."""
    norms = {key: torch.nn.utils.get_total_norm(grads)
             for key, params in groups.items() if (grads := [p.grad for p in params if p.grad is not None])}
    return torch.nn.utils.get_total_norm(list(norms.values())), norms  # 0 when no group has gradients


def all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Device bool: every element of every tensor is finite (True for none). One foreach max-norm
    instead of one `isfinite` kernel per tensor: NaN or inf anywhere makes it non-finite, and a
    max-norm cannot overflow."""
    return torch.nn.utils.get_total_norm(list(tensors), math.inf).isfinite()


def first_bad_step(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """The earliest step with a non-finite loss, folded in without a host sync: `step` if this
    step's loss is not finite and no earlier step was, else `first_bad` unchanged."""
    bad = ~torch.isfinite(loss.detach()).all()
    return torch.where(bad, first_bad.clamp(max=step), first_bad)


def slope_spread(slopes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population std) of one layer's per-unit slopes."""
    std, mean = torch.std_mean(slopes.float(), correction=0)
    return mean, std


# -- throughput ------------------------------------------------------------------------------------


def tokens_per_second(steps: int, accumulate: int, batch_tokens: int, world_size: int, seconds: float) -> float:
    """Training tokens per second: every optimizer step consumes `accumulate` batches of
    `batch_tokens` tokens on each of `world_size` processes."""
    return steps * accumulate * batch_tokens * world_size / seconds


def model_flops_utilisation(tokens_per_sec: float, flops_per_token: float, peak_flops: float) -> float:
    """Achieved model FLOP/s as a share of the devices' peak."""
    return tokens_per_sec * flops_per_token / peak_flops


# -- normalization-free layers ----------------------------------------------------------------------


def saturation_counts(unit_slope: torch.Tensor, threshold: float) -> torch.Tensor:
    """(2,) [coordinates whose unit slope is below `threshold`, all coordinates], in `count_dtype`:
    sums that add across batches and processes before their ratio is taken."""
    dtype = count_dtype(unit_slope.device)
    return torch.stack([(unit_slope < threshold).sum().to(dtype), torch.tensor(unit_slope.numel(), dtype=dtype, device=unit_slope.device)])
