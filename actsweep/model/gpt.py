"""A pre-norm GPT whose FFN activation, normalization and biases are switches.

Read top to bottom: the switch registries (`BIAS_SITES`, `DROPOUT_SITES`; `NORMS` and `INITS` in their modules),
each with a `Literal` of its names (derived from it: `--help` lists them and parsing refuses others),
`GPTConfig` (names and numbers, validated), then attention, MLP, block and the GPT itself. With
`norm="layernorm"`, `activation="gelu_tanh"`, `bias="all"`, tied weights and `init="gpt2"` the model
is GPT-2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from actsweep.model.attention import ATTENTION, AttentionName, logit_bound
from actsweep.model.activations import (SLOPE_SCOPES, ActivationName, SlopeBank, SlopeScope, build_activation,
                                        check_activation)
from actsweep.model.hooks import HookPoint, name_hook_points
from actsweep.model.entropy_reg import (ENTROPY_MAXIMA, ENTROPY_REDUCTIONS, THRESHOLD_SCOPES, EntropyMax,
                                        EntropyReduction, EntropyRegularizer, ThresholdScope, attention_with_probs)
from actsweep.model.init import INITS, InitName
from actsweep.model.sampling import check_sampling
from actsweep.model.norms import NORMS, QK_NORMS, EmbeddingScale, NormName, QKNormName
from actsweep.errors import ConfigError, check_choice
from actsweep.resources import check_fits_memory

# Which sites carry a bias. "qk" is ReLU's Revival: of the projections only query and key have one;
# its norms (HF GPT-2's LayerNorms) keep theirs.
BIAS_SITES = {
    "all": frozenset({"q", "k", "v", "attn_out", "fc", "fc_out", "norm"}),
    "qk": frozenset({"q", "k", "norm"}),
    "no_qkv": frozenset({"attn_out", "fc", "fc_out", "norm"}),  # the blog's code: bias-free q, k, v Linears
    "none": frozenset(),
}
BiasSites = Literal[tuple(BIAS_SITES)]

# Where `dropout` applies: on the summed embeddings, the attention probabilities, after the attention
# output projection, after the FFN's output projection. The blog's code has no embedding dropout
# ("blocks"); ReLU's Revival's custom blocks have none at all, only HF GPT-2's embedding dropout.
DROPOUT_SITES = {
    "all": frozenset({"embedding", "attn", "attn_out", "fc_out"}),
    "blocks": frozenset({"attn", "attn_out", "fc_out"}),
    "embedding": frozenset({"embedding"}),
}
DropoutSites = Literal[tuple(DROPOUT_SITES)]


@dataclass
class GPTConfig:
    """Every architectural setting and its default, in one place; each is also `--model.<name>`."""

    vocab_size: int = 50257
    """Tokens in the vocabulary (linked from the data)."""
    block_size: int = 128
    """Context length (linked from the data)."""
    n_layer: int = 6
    """Transformer blocks."""
    n_head: int = 6
    """Attention heads per block."""
    n_embd: int = 384
    """Width of the residual stream."""
    mlp_hidden: int | None = None
    """Hidden units of each FFN (default 4 × n_embd)."""
    activation: ActivationName | list[ActivationName] = "gelu"
    """FFN activation: one name, or one name per layer (see ACTIVATIONS)."""
    slope_scope: SlopeScope = "layer"
    """Learnable leaky-ReLU slopes: global (one slope) | layer | neuron."""
    slope_init: float = 0.01
    """Initial value of learnable slopes."""
    leaky_slope: float = 0.01
    """Fixed slope of `leaky_relu`."""
    norm: NormName = "layernorm"
    """Norm before attention and before the FFN of every block: layernorm | rmsnorm | none | dyt | derf | dyisru."""
    final_norm: NormName = "layernorm"
    """Norm before the LM head (ReLU's Revival keeps it in LN-free models); the same kinds as norm."""
    norm_eps: float = 1e-5
    """Epsilon of every norm (dyisru: added to beta + x², as dyaf.py:100)."""
    norm_alpha_attn: float = 0.5
    """dyt, derf: initial alpha of the norms before attention (DyT dynamic_tanh.py:7; Derf model_derf.patch:10)."""
    norm_alpha_ffn: float = 0.5
    """dyt, derf: initial alpha of the norms before the FFN (DyT other_tasks/LLaMA/README.md:61-63: 1/4 of attention's)."""
    norm_alpha_final: float = 0.5
    """dyt, derf: initial alpha of the final norm (DyT's LLaMA runs: as the FFN one)."""
    derf_shift: float = 0.0
    """derf: initial shift s in erf(alpha·x + s) (Derf model_derf.patch:10)."""
    dyisru_beta: float = 100.0
    """dyisru: initial beta in x/sqrt(beta + x²) (dynamic-activation-functions nanoGPT/dyaf.py:95)."""
    embedding_scale: bool = False
    """Multiply the summed embeddings by a learnable scalar initialised at sqrt(n_embd) (DyT's LLaMA code, Derf)."""
    qk_norm: QKNormName = "none"
    """Normalize queries and keys per head before attention: none | rms (parameter-free RMSNorm, QK-norm)."""
    bias: BiasSites = "all"
    """Sites with a bias: all | qk (of the projections only query and key) | no_qkv | none."""
    lm_head_bias: bool = False
    """Give the LM head a bias (the blog's code: an untied nn.Linear with one)."""
    sdpa_backend: AttentionName = "adaptive"
    """Attention kernels: adaptive (auto until logits grow large, then math) | auto | flash | efficient | cudnn | math (exact at huge logits) | eager (scores in the activation dtype, as HF GPT-2 and ReLU's Revival: fp16 overflows)."""
    exact_attention_above: float = 1e4
    """adaptive: switch to math for good once a bound on |attention logits| passes this (fused gradients break near 1e6)."""
    entropy_reg: bool = False
    """Add entropy-guided attention's entropy penalty to the training loss (training attention then runs unfused)."""
    entropy_reg_coeff: float = 1e-5
    """entropy_reg: its λ (entropy_regularization.py:11)."""
    entropy_reg_tolerance: float = 0.2
    """entropy_reg: no penalty within this fraction of the maximum entropy of the threshold (entropy_regularization.py:11)."""
    entropy_reg_thresholds: ThresholdScope = "shared"
    """entropy_reg: learnable per-head thresholds shared by all layers (the code's example) | layer (one vector per layer)."""
    entropy_reg_max: EntropyMax = "context"
    """entropy_reg: maximum entropy of a row: context (log T for every row, the code) | causal (log t for row t)."""
    entropy_reg_reduce: EntropyReduction = "sum"
    """entropy_reg: over batch and query positions: sum (the code) | mean."""
    entropy_reg_threshold_init: float = 0.5
    """entropy_reg: initial thresholds as a fraction of the maximum entropy (the code leaves it open)."""
    dropout: float = 0.0
    """Dropout probability."""
    dropout_sites: DropoutSites = "all"
    """Where dropout applies: all | blocks (not the embeddings) | embedding (only there)."""
    tie_weights: bool = True
    """Share the token embedding with the LM head."""
    init_std: float = 0.02
    """Standard deviation of the weights' normal initialisation."""
    init: InitName = "gpt2"
    """Initialisation: gpt2 (residual projections scaled by 1/sqrt(2·n_layer)) | normal (unscaled)."""
    embedding_init_std: float | None = None
    """Standard deviation of the token and position tables (default init_std; torch's own is 1)."""
    pad_vocab_multiple: int = 1
    """Pad the embedding's rows to a multiple of this (e.g. 64: 50257 -> 50304)."""
    activations: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "pad_vocab_multiple"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"e.g. n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        names = [self.activation] * self.n_layer if isinstance(self.activation, str) else list(self.activation)
        if len(names) != self.n_layer:
            raise ConfigError(
                f"activation lists one name per layer: got {len(names)} names for n_layer={self.n_layer}"
            )
        for name in names:
            check_activation(name)
        self.activations = names
        for switch, value, allowed in (
            ("norm", self.norm, NORMS),
            ("final_norm", self.final_norm, NORMS),
            ("bias", self.bias, BIAS_SITES),
            ("dropout_sites", self.dropout_sites, DROPOUT_SITES),
            ("init", self.init, INITS),
            ("slope_scope", self.slope_scope, SLOPE_SCOPES),
            ("sdpa_backend", self.sdpa_backend, ATTENTION),
            ("qk_norm", self.qk_norm, QK_NORMS),
            ("entropy_reg_thresholds", self.entropy_reg_thresholds, THRESHOLD_SCOPES),
            ("entropy_reg_max", self.entropy_reg_max, ENTROPY_MAXIMA),
            ("entropy_reg_reduce", self.entropy_reg_reduce, ENTROPY_REDUCTIONS),
        ):
            check_choice(switch, value, allowed)  # the Python API: the CLI's parser refuses it from the type
        if not self.dyisru_beta > 0:
            raise ConfigError(f"dyisru_beta must be positive, got {self.dyisru_beta}")
        if not self.exact_attention_above > 0:
            raise ConfigError(f"exact_attention_above must be positive, got {self.exact_attention_above}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.embedding_init_std is not None:
            raise ConfigError("a tied token table is the LM head's weight and is initialised as one (init_std); "
                              "untie it (--model.tie_weights false) to give the embeddings embedding_init_std")
        for name in ("init_std", "embedding_init_std", "norm_eps"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.n_embd
        if self.mlp_hidden < 1:
            raise ConfigError(f"mlp_hidden must be a positive integer (or null: 4 × n_embd), got {self.mlp_hidden}")
        check_fits_memory(4 * self.approx_parameters(), f"a model of about {self.approx_parameters():.3g} parameters "
                          f"(n_layer={self.n_layer}, n_embd={self.n_embd}, mlp_hidden={self.mlp_hidden}) in float32",
                          "lower --model.mlp_hidden, --model.n_embd or --model.n_layer")

    def approx_parameters(self) -> int:
        """Parameters, less biases and norms: token and position tables, the LM head when untied, and
        per block attention's 4·n_embd² and the FFN's 2·n_embd·mlp_hidden."""
        tables = (self.padded_vocab_size * (1 if self.tie_weights else 2) + self.block_size) * self.n_embd
        return tables + self.n_layer * (4 * self.n_embd**2 + 2 * self.n_embd * self.mlp_hidden)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def sites(self) -> frozenset[str]:
        return BIAS_SITES[self.bias]

    def dropout_at(self, site: str) -> float:
        """The dropout probability at ``site`` (see DROPOUT_SITES)."""
        return self.dropout if site in DROPOUT_SITES[self.dropout_sites] else 0.0


def make_norm(kind: str, cfg: GPTConfig, site: str) -> nn.Module:
    """The norm of one site: "attn" or "ffn" (in each block) or "final"."""
    return NORMS[kind](cfg, site, "norm" in cfg.sites)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention on `scaled_dot_product_attention`; q and k pass hook points so
    that statistics can recompute attention probabilities without taking training off SDPA."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout_at("attn")
        self.sdpa_backend = cfg.sdpa_backend  # a name: the backend enums do not pickle (ddp_spawn)
        # adaptive: the largest logit bound of training forwards since the last check
        self.tracks_logits = cfg.sdpa_backend == "adaptive"
        self.register_buffer("logit_peak", torch.zeros(()), persistent=False)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        # Biases of q, k, v in that order; "qk" mode stores two thirds and pads v's with zeros.
        n_biased = len([s for s in ("q", "k", "v") if s in cfg.sites])
        self.qkv_bias = nn.Parameter(torch.zeros(n_biased * cfg.n_embd)) if n_biased else None
        self.out = nn.Linear(cfg.n_embd, cfg.n_embd, bias="attn_out" in cfg.sites)
        self.resid_drop = nn.Dropout(cfg.dropout_at("attn_out"))
        self.norm_q = QK_NORMS[cfg.qk_norm](cfg.n_embd // cfg.n_head, cfg.norm_eps)
        self.norm_k = QK_NORMS[cfg.qk_norm](cfg.n_embd // cfg.n_head, cfg.norm_eps)
        self.hook_q, self.hook_k = HookPoint(), HookPoint()
        # entropy_reg: training forwards take the exact path and keep the probabilities for the penalty
        self.keeps_probs, self.probs = cfg.entropy_reg, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        bias = None if self.qkv_bias is None else F.pad(self.qkv_bias, (0, 3 * C - self.qkv_bias.numel()))
        q, k, v = F.linear(x, self.qkv.weight, bias).view(B, T, 3, self.n_head, C // self.n_head).unbind(2)
        q, k, v = self.norm_q(q.transpose(1, 2)), self.norm_k(k.transpose(1, 2)), v.transpose(1, 2)
        q, k = self.hook_q(q), self.hook_k(k)  # the q and k attention uses, after any QK-norm
        drop = self.dropout if self.training else 0.0
        if self.tracks_logits and torch.is_grad_enabled():  # only forwards with a backward need it
            self.logit_peak.copy_(torch.maximum(self.logit_peak, logit_bound(q, k)))
        if self.keeps_probs and torch.is_grad_enabled():
            y, self.probs = attention_with_probs(q, k, v, drop)
        else:
            y = ATTENTION[self.sdpa_backend](q, k, v, drop)
        return self.resid_drop(self.out(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, activation: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias="fc" in cfg.sites)
        self.act = activation
        self.out = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias="fc_out" in cfg.sites)
        self.drop = nn.Dropout(cfg.dropout_at("fc_out"))
        self.hook_pre, self.hook_act = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(self.hook_act(self.act(self.hook_pre(self.fc(x))))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, activation: nn.Module) -> None:
        super().__init__()
        self.norm_attn = make_norm(cfg.norm, cfg, "attn")
        self.attn = CausalSelfAttention(cfg)
        self.norm_mlp = make_norm(cfg.norm, cfg, "ffn")
        self.mlp = MLP(cfg, activation)
        self.hook_resid = HookPoint()  # the residual stream after this block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        return self.hook_resid(x + self.mlp(self.norm_mlp(x)))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout_at("embedding"))
        self.embedding_scale = EmbeddingScale(cfg.n_embd) if cfg.embedding_scale else nn.Identity()
        self.slopes = SlopeBank(cfg.slope_scope, cfg.slope_init, cfg.mlp_hidden)
        self.blocks = nn.ModuleList(
            Block(cfg, build_activation(name, self.slopes, cfg.leaky_slope)) for name in cfg.activations
        )
        self.norm_final = make_norm(cfg.final_norm, cfg, "final")
        self.entropy_reg = EntropyRegularizer(
            cfg.n_layer, cfg.n_head, cfg.entropy_reg_coeff, cfg.entropy_reg_tolerance, cfg.entropy_reg_thresholds,
            cfg.entropy_reg_max, cfg.entropy_reg_reduce, cfg.entropy_reg_threshold_init) if cfg.entropy_reg else None
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=cfg.lm_head_bias)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        INITS[cfg.init](self)
        name_hook_points(self)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T); padded vocabulary rows are dropped."""
        T = idx.size(1)
        if T > self.cfg.block_size:
            raise ConfigError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.embedding_scale(self.wte(idx) + self.wpe(pos)))
        for block in self.blocks:
            x = block(x)
        # Only the real rows of the head: slicing the padded product instead copies the logits
        # (B, T, padded) once forward and once backward (~3 % of a blog-size CPU step, bench/RESULTS.md).
        V, bias = self.cfg.vocab_size, self.lm_head.bias
        return F.linear(self.norm_final(x), self.lm_head.weight[:V], None if bias is None else bias[:V])

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Token ids (B, T) continued by `max_new_tokens` tokens (nanoGPT's), each drawn from softmax(logits / temperature)
        over the `top_k` most likely; temperature 0: the most likely. Repeatable with `generator`; call in eval mode."""
        check_sampling(max_new_tokens, temperature, top_k)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.cfg.block_size:])[:, -1, :]  # the model sees at most block_size tokens
            if top_k is not None:  # only tokens at or above the k-th largest logit
                logits = logits.masked_fill(logits < logits.topk(min(top_k, logits.size(-1))).values[:, -1:], -math.inf)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                next_id = torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx

    def entropy_penalty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """entropy_reg, after a training forward: (λ-weighted penalty for the loss, (n_layer,) per-layer
        penalties before λ); releases the probabilities it used."""
        probs = [attn.probs for attn in self.attention_modules]
        if self.entropy_reg is None or any(p is None for p in probs):
            raise ConfigError("entropy_penalty needs entropy_reg and a forward with gradients enabled")
        for attn in self.attention_modules:
            attn.probs = None
        return self.entropy_reg(probs)

    @property
    def attention_modules(self) -> list[CausalSelfAttention]:
        return [block.attn for block in self.blocks]

    @property
    def tracks_attention_logits(self) -> bool:
        """Adaptive kernels that have not switched to math yet."""
        return any(attn.tracks_logits for attn in self.attention_modules)

    def logit_peaks(self) -> torch.Tensor:
        """(n_layer,) largest logit bound per layer since the last check (adaptive kernels; else 0)."""
        return torch.stack([attn.logit_peak for attn in self.attention_modules])

    def check_attention_logits(self, peak: float | None = None) -> bool:
        """Adaptive kernels, on the host: if the largest logit bound since the last check (`peak`, by
        default read from `logit_peaks()`: one transfer) passed `cfg.exact_attention_above`, every
        layer moves to the math kernel for the rest of the run. Resets the peaks; returns whether
        attention is now exact."""
        peak = float(self.logit_peaks().max()) if peak is None else peak
        for attn in self.attention_modules:
            attn.logit_peak.zero_()
        if self.cfg.sdpa_backend == "adaptive" and peak > self.cfg.exact_attention_above:
            self._use_exact_attention()
        return self.exact_attention

    def _use_exact_attention(self) -> None:
        for attn in self.attention_modules:
            attn.sdpa_backend, attn.tracks_logits = "math", False

    @property
    def exact_attention(self) -> bool:
        return all(attn.sdpa_backend == "math" for attn in self.attention_modules)

    def attention_state(self) -> dict[str, object]:
        """What `load_attention_state` needs to resume adaptive kernels exactly (for checkpoints)."""
        return {"exact": self.exact_attention, "peaks": self.logit_peaks().cpu()}

    def load_attention_state(self, state: dict[str, object]) -> None:
        """Restore `attention_state()`; models whose `sdpa_backend` is not adaptive keep theirs."""
        if self.cfg.sdpa_backend != "adaptive":
            return
        if state["exact"]:
            self._use_exact_attention()
        for attn, peak in zip(self.attention_modules, state["peaks"]):
            attn.logit_peak.copy_(peak)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the weights plus attention's 12·L·C·T (PaLM appendix B)."""
        c = self.cfg
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * c.block_size
