"""Open an actsweep model in TransformerLens: `to_transformer_lens(run, checkpoint, module or GPT)`.

The weights are copied into a `HookedTransformer` built from a config that says what the model is,
with no folding or centring (`fold_ln`, `center_writing_weights`, `center_unembed` would change its
numbers and its `hook_post`/`hook_pattern` activations): its logits equal actsweep's (fp32, within
1e-4; tests/test_export.py). Needs the `interp` extra (``pip install "actsweep[interp]"``,
transformer-lens < 4: 4.0 removed `HookedTransformer`).

What a `HookedTransformer` cannot express is refused in one line naming it: the normalization-free
norms (dyt, derf, dyisru), QK-norm, the embedding scale, and a block norm different from the final one
(one may be `none`: TransformerLens itself uses an identity there).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from actsweep.errors import ConfigError
from actsweep.model.gpt import GPT

TL_NORMS = {"layernorm": "LN", "rmsnorm": "RMS"}
# Our activation name -> TransformerLens's; others (leaky ReLUs) become a copy of our module per layer.
TL_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu2": "relu2"}


def load_gpt(source) -> GPT:
    """The GPT of a `GPT`, an `ActSweepModule`, a checkpoint file, or a run folder (its
    `checkpoints/last.ckpt`), in eval mode on the CPU."""
    if isinstance(source, GPT):
        return source.eval()
    if hasattr(source, "model") and isinstance(source.model, GPT):
        return source.model.eval()
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder with checkpoints/last.ckpt or a .ckpt file")
    from actsweep.train.module import ActSweepModule

    return ActSweepModule.load_from_checkpoint(path, map_location="cpu").model.eval()


def check_expressible(model: GPT) -> str | None:
    """TransformerLens's `normalization_type` for `model`, or ConfigError naming what it cannot express."""
    c = model.cfg
    for name, value in (("norm", c.norm), ("final_norm", c.final_norm)):
        if value not in TL_NORMS and value != "none":
            raise ConfigError(f"TransformerLens cannot express {name} {value!r}; exportable norms: layernorm, rmsnorm, none")
    kinds = {c.norm, c.final_norm} - {"none"}
    if len(kinds) > 1:
        raise ConfigError(f"TransformerLens cannot express norm {c.norm!r} with final_norm {c.final_norm!r}; use one kind (or none)")
    if c.qk_norm != "none":
        raise ConfigError(f"TransformerLens cannot express qk_norm {c.qk_norm!r}")
    if c.embedding_scale:
        raise ConfigError("TransformerLens cannot express embedding_scale (a learnable scalar on the embeddings)")
    return TL_NORMS[kinds.pop()] if kinds else None


def tl_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under TransformerLens's names and layouts (W_Q: heads × d_model × d_head, ...)."""
    c = model.cfg
    H, C = c.n_head, c.n_embd
    d = C // H
    zeros = torch.zeros(C)
    sd = {"embed.W_E": model.wte.weight, "pos_embed.W_pos": model.wpe.weight,
          "unembed.W_U": model.lm_head.weight[: c.vocab_size].T,
          "unembed.b_U": model.lm_head.bias[: c.vocab_size] if model.lm_head.bias is not None else torch.zeros(c.vocab_size)}

    def norm(prefix: str, module) -> None:
        if hasattr(module, "weight"):
            sd[prefix + ".w"] = module.weight
            if not isinstance(module, torch.nn.RMSNorm):
                sd[prefix + ".b"] = module.bias if module.bias is not None else zeros

    for i, block in enumerate(model.blocks):
        p, attn, mlp = f"blocks.{i}.", block.attn, block.mlp
        norm(p + "ln1", block.norm_attn)
        norm(p + "ln2", block.norm_mlp)
        bias = torch.zeros(3 * C) if attn.qkv_bias is None else torch.nn.functional.pad(attn.qkv_bias, (0, 3 * C - attn.qkv_bias.numel()))
        for j, (w, b) in enumerate(zip(attn.qkv.weight.split(C), bias.split(C))):
            name = "QKV"[j]
            sd[p + f"attn.W_{name}"] = w.view(H, d, C).transpose(1, 2)
            sd[p + f"attn.b_{name}"] = b.view(H, d)
        sd[p + "attn.W_O"] = attn.out.weight.view(C, H, d).permute(1, 2, 0)
        sd[p + "attn.b_O"] = attn.out.bias if attn.out.bias is not None else zeros
        sd[p + "mlp.W_in"], sd[p + "mlp.W_out"] = mlp.fc.weight.T, mlp.out.weight.T
        sd[p + "mlp.b_in"] = mlp.fc.bias if mlp.fc.bias is not None else torch.zeros(c.mlp_hidden)
        sd[p + "mlp.b_out"] = mlp.out.bias if mlp.out.bias is not None else zeros
    norm("ln_final", model.norm_final)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def to_transformer_lens(source):
    """A TransformerLens `HookedTransformer` computing the same function as an actsweep model.

    `source`: a run folder (its checkpoints/last.ckpt), a .ckpt file, an `ActSweepModule` or a `GPT`.
    Hooks then carry TransformerLens's names: `blocks.{l}.mlp.hook_post`, `blocks.{l}.attn.hook_pattern`, ...
    """
    model = load_gpt(source)
    normalization = check_expressible(model)
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as e:
        raise ConfigError(f"to_transformer_lens needs transformer-lens<4: pip install 'actsweep[interp]' ({e})") from None
    c = model.cfg
    names = c.activations
    uniform = len(set(names)) == 1 and names[0] in TL_ACTIVATIONS
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=c.mlp_hidden,
        n_ctx=c.block_size, d_vocab=c.padded_vocab_size, d_vocab_out=c.vocab_size, eps=c.norm_eps,
        act_fn=TL_ACTIVATIONS[names[0]] if uniform else "relu", normalization_type=normalization,
        positional_embedding_type="standard", default_prepend_bos=False, init_weights=False, device="cpu",
        dtype=torch.float32, original_architecture="actsweep",
    )
    tl = HookedTransformer(cfg, move_to_device=False)
    for i, block in enumerate(model.blocks):
        if not uniform:  # per-layer activations (learnable leaky ReLU: its trained slope) as modules
            tl.blocks[i].mlp.act_fn = copy.deepcopy(block.mlp.act).requires_grad_(False)
        if normalization and c.norm == "none":  # what TransformerLens builds for normalization_type None
            tl.blocks[i].ln1, tl.blocks[i].ln2 = torch.nn.Identity(), torch.nn.Identity()
    if normalization and c.final_norm == "none":
        tl.ln_final = torch.nn.Identity()
    missing, unexpected = tl.load_state_dict(tl_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith(("IGNORE", "mask")) and ".act_fn." not in k]  # buffers, our slopes
    if missing or unexpected:  # a TransformerLens release that renamed its parameters
        raise ConfigError(f"this transformer-lens names its weights differently: missing {missing}, unexpected {unexpected}")
    return tl.eval()
