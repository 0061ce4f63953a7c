"""Open an actsweep model in TransformerLens: `to_transformer_lens(run, checkpoint, module or GPT)`.

The weights are copied into a `HookedTransformer` (transformer-lens 3.x) or, with 4.x, which removed
it, into transformer-lens's native model wrapped in a `TransformerBridge`; each is built from a config
that says what the model is, with no folding or centring (`fold_ln`, `center_writing_weights`,
`center_unembed` would change its numbers and its `hook_post`/`hook_pattern` activations): its logits
equal actsweep's (fp32, within 1e-4; tests/test_export.py, run by CI with each line). Needs the
`interp` extra (``pip install "actsweep[interp]"``).

What a `HookedTransformer` cannot express is refused in one line naming it: the normalization-free
norms (dyt, derf, dyisru), QK-norm, the embedding scale, and a block norm different from the final one
(one may be `none`: TransformerLens itself uses an identity there).
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from actsweep.errors import ConfigError
from actsweep.model.gpt import GPT

TL_NORMS = {"layernorm": "LN", "rmsnorm": "RMS"}
# Our activation name -> TransformerLens's; others (leaky ReLUs) become a copy of our module per layer.
TL_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "silu": "silu", "relu2": "relu2"}
NATIVE_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": "silu"}  # transformer-lens 4


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


def plain_weights(model: GPT) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Our weights as (out, in) matrices and bias vectors (zeros where the model has none) under plain
    names, which each TransformerLens layout renames and reshapes: the model's (`embed`, `pos`, `head`,
    `head.b` if it has one, `final.w`/`final.b` for a final norm with those) and each layer's (`ln1.w`,
    `ln1.b`, `ln2.w`, `ln2.b` where its norms have them, `q`, `k`, `v`, `o`, `fc`, `out` and their `.b`)."""
    c = model.cfg
    C = c.n_embd

    def norm(prefix: str, module, into: dict) -> None:
        if hasattr(module, "weight"):
            into[prefix + ".w"] = module.weight
            if not isinstance(module, torch.nn.RMSNorm):
                into[prefix + ".b"] = module.bias if module.bias is not None else torch.zeros(C)

    def linear(name: str, module: torch.nn.Linear, into: dict) -> None:
        into[name] = module.weight
        into[name + ".b"] = module.bias if module.bias is not None else torch.zeros(module.out_features)

    top = {"embed": model.wte.weight, "pos": model.wpe.weight, "head": model.lm_head.weight[: c.vocab_size]}
    if model.lm_head.bias is not None:
        top["head.b"] = model.lm_head.bias[: c.vocab_size]
    norm("final", model.norm_final, top)
    layers = []
    for block in model.blocks:
        layer, attn = {}, block.attn
        norm("ln1", block.norm_attn, layer)
        norm("ln2", block.norm_mlp, layer)
        bias = torch.zeros(3 * C) if attn.qkv_bias is None else torch.nn.functional.pad(attn.qkv_bias, (0, 3 * C - attn.qkv_bias.numel()))
        for name, w, b in zip("qkv", attn.qkv.weight.split(C), bias.split(C)):
            layer[name], layer[name + ".b"] = w, b
        linear("o", attn.out, layer)
        linear("fc", block.mlp.fc, layer)
        linear("out", block.mlp.out, layer)
        layers.append(layer)
    return top, layers


def detached(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def tl_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under TransformerLens 3's names and layouts (W_Q: heads × d_model × d_head, ...)."""
    c = model.cfg
    H, C = c.n_head, c.n_embd
    d = C // H
    top, layers = plain_weights(model)
    sd = {"embed.W_E": top["embed"], "pos_embed.W_pos": top["pos"], "unembed.W_U": top["head"].T,
          "unembed.b_U": top.get("head.b", torch.zeros(c.vocab_size))}
    sd.update({f"ln_final.{k[-1]}": v for k, v in top.items() if k.startswith("final.")})
    for i, layer in enumerate(layers):
        p = f"blocks.{i}."
        sd.update({p + k: v for k, v in layer.items() if k.startswith("ln")})
        for name in "qkv":
            sd[p + f"attn.W_{name.upper()}"] = layer[name].view(H, d, C).transpose(1, 2)
            sd[p + f"attn.b_{name.upper()}"] = layer[name + ".b"].view(H, d)
        sd[p + "attn.W_O"], sd[p + "attn.b_O"] = layer["o"].view(C, H, d).permute(1, 2, 0), layer["o.b"]
        sd[p + "mlp.W_in"], sd[p + "mlp.b_in"] = layer["fc"].T, layer["fc.b"]
        sd[p + "mlp.W_out"], sd[p + "mlp.b_out"] = layer["out"].T, layer["out.b"]
    return detached(sd)


# plain name -> transformer-lens 4's native model's (its Linear and norm modules keep our layouts)
NATIVE_NAMES = {"w": "weight", "b": "bias", "q": "attn.q", "k": "attn.k", "v": "attn.v", "o": "attn.o", "fc": "mlp.fc_in",
                "out": "mlp.fc_out", "embed": "tok_embed", "final": "ln_out"}


def native_name(plain: str) -> str:
    """`fc.b` -> `mlp.fc_in.bias`, `ln1.w` -> `ln1.weight`, `q` -> `attn.q.weight`, `pos` -> `pos.weight`."""
    first, _, rest = plain.partition(".")
    return f"{NATIVE_NAMES.get(first, first)}.{NATIVE_NAMES[rest or 'w']}"


def native_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under the names of transformer-lens 4's native model (split q/k/v, (out, in) layouts)."""
    top, layers = plain_weights(model)
    sd = {native_name(k): v for k, v in top.items()}
    for i, layer in enumerate(layers):
        sd.update({f"layers.{i}.{native_name(k)}": v for k, v in layer.items()})
    return detached(sd)


def to_transformer_lens(source):
    """The same function as an actsweep model in the installed TransformerLens: a `HookedTransformer`
    (transformer-lens 3.x) or a `TransformerBridge` around its native model (4.x, where
    `HookedTransformer` is gone).

    `source`: a run folder (its checkpoints/last.ckpt), a .ckpt file, an `ActSweepModule` or a `GPT`.
    Hooks then carry TransformerLens's names: `blocks.{l}.mlp.hook_post`, `blocks.{l}.attn.hook_pattern`, ...
    """
    model = load_gpt(source)
    normalization = check_expressible(model)
    try:
        release = int(version("transformer-lens").split(".")[0])
    except PackageNotFoundError:
        raise ConfigError("to_transformer_lens needs transformer-lens: pip install 'actsweep[interp]'") from None
    return (bridged if release >= 4 else hooked)(model, normalization)


def layer_activation(model: GPT, names: dict[str, str]) -> str | None:
    """TransformerLens's name for the model's one activation, or None (per-layer copies of ours)."""
    kinds = model.cfg.activations
    return names.get(kinds[0]) if len(set(kinds)) == 1 else None


def tl_shape(c, act_fn: str | None, normalization: str | None) -> dict:
    """The config fields both TransformerLens lines share: the model's shape, activation and norm."""
    return dict(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head, d_mlp=c.mlp_hidden,
        n_ctx=c.block_size, d_vocab=c.padded_vocab_size, d_vocab_out=c.vocab_size, eps=c.norm_eps,
        act_fn=act_fn or "relu", normalization_type=normalization,
        positional_embedding_type="standard", default_prepend_bos=False, init_weights=False,
    )


def check_loaded(missing: list[str], unexpected: list[str]) -> None:
    """Refuse a TransformerLens release that renamed its parameters (what is left after the expected gaps)."""
    if missing or unexpected:
        raise ConfigError(f"this transformer-lens names its weights differently: missing {missing}, unexpected {unexpected}")


def hooked(model: GPT, normalization: str | None):
    """transformer-lens 3.x: a `HookedTransformer` holding the model's weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = model.cfg
    act_fn = layer_activation(model, TL_ACTIVATIONS)
    cfg = HookedTransformerConfig(
        **tl_shape(c, act_fn, normalization), device="cpu", dtype=torch.float32, original_architecture="actsweep"
    )
    tl = HookedTransformer(cfg, move_to_device=False)
    for i, block in enumerate(model.blocks):
        if act_fn is None:  # per-layer activations (learnable leaky ReLU: its trained slope) as modules
            tl.blocks[i].mlp.act_fn = copy.deepcopy(block.mlp.act).requires_grad_(False)
        if normalization and c.norm == "none":  # what TransformerLens builds for normalization_type None
            tl.blocks[i].ln1, tl.blocks[i].ln2 = torch.nn.Identity(), torch.nn.Identity()
    if normalization and c.final_norm == "none":
        tl.ln_final = torch.nn.Identity()
    missing, unexpected = tl.load_state_dict(tl_state_dict(model), strict=False)
    # TransformerLens's buffers and our slopes (copied with the modules) are not among our weights
    check_loaded([k for k in missing if not k.endswith(("IGNORE", "mask")) and ".act_fn." not in k], unexpected)
    return tl.eval()


def native_norm(kind: str, c):
    """transformer-lens 4's native norm of `kind` ("LN" or "RMS") for the model's width."""
    from transformer_lens.model_bridge.sources.native.model import NativeRMSNorm

    return torch.nn.LayerNorm(c.n_embd, eps=c.norm_eps) if kind == "LN" else NativeRMSNorm(c.n_embd, eps=c.norm_eps)


def bridged(model: GPT, normalization: str | None):
    """transformer-lens 4.x: a `TransformerBridge` around its native model holding the model's weights."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformer_lens.model_bridge.sources.native import NativeModel

    c = model.cfg
    act_fn = layer_activation(model, NATIVE_ACTIVATIONS)

    # The bridge wraps every norm of the config's kind alike (an Identity in place of one breaks it): a
    # model with one norm, block or final, is built without norms and that one put in by hand.
    cfg = TransformerBridgeConfig(
        **tl_shape(c, act_fn, normalization if c.norm == c.final_norm else None), architecture="TransformerLensNative"
    )
    native = NativeModel(cfg)
    for i, block in enumerate(model.blocks):
        if act_fn is None:  # per-layer activations (learnable leaky ReLU: its trained slope) as modules
            native.layers[i].mlp.act = copy.deepcopy(block.mlp.act).requires_grad_(False)
        if c.norm != c.final_norm and c.norm != "none":
            native.layers[i].ln1, native.layers[i].ln2 = native_norm(normalization, c), native_norm(normalization, c)
    if c.norm != c.final_norm and c.final_norm != "none":
        native.ln_out = native_norm(normalization, c)
    if model.lm_head.bias is not None:
        native.head = torch.nn.Linear(c.n_embd, c.vocab_size, bias=True)
    missing, unexpected = native.load_state_dict(native_state_dict(model), strict=False)
    check_loaded([k for k in missing if ".mlp.act." not in k], unexpected)  # our slopes, copied with the modules
    return build_bridge_from_module(native.eval(), "TransformerLensNative", tl_config=cfg, model_name="actsweep").eval()
