"""to_transformer_lens: the same function in TransformerLens (logits within 1e-4, fp32), the same
statistics from its cache, refusals in one line, and actsweep hooks answering to TL's names."""

from __future__ import annotations

import pytest
import torch

from actsweep.errors import ConfigError
from actsweep.export import to_transformer_lens
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.model.hooks import capture
from actsweep.stats.entropy import probe_entropy
from actsweep.stats.metrics import fired_units, never_fired_share

pytest.importorskip("transformer_lens")  # the `interp` extra; CI installs it (`test` extra)

TINY = dict(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32, pad_vocab_multiple=8)


def trained_like(**overrides) -> GPT:
    """A tiny GPT whose every parameter is moved off its init, so no zero bias or unit gain hides a bug."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("activation", ["relu", "gelu", "relu2", "learnable_leaky_relu", ["gelu_tanh", "silu"]])
@pytest.mark.parametrize("norm, final_norm, bias", [("layernorm", "layernorm", "all"), ("none", "none", "qk"),
                                                    ("none", "layernorm", "qk"), ("rmsnorm", "rmsnorm", "none"),
                                                    ("rmsnorm", "none", "all"), ("none", "rmsnorm", "none")])
def test_logits_equal_actsweeps(activation, norm, final_norm, bias):
    model = trained_like(activation=activation, norm=norm, final_norm=final_norm, bias=bias,
                         tie_weights=norm == "layernorm", lm_head_bias=norm == "rmsnorm")
    tl = to_transformer_lens(model)
    idx = torch.randint(0, 61, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(tl(idx), model(idx), rtol=0, atol=1e-4)
    if norm == "none" and final_norm == "none":
        assert tl.cfg.normalization_type is None


def test_tl_cache_gives_actsweeps_dead_units_and_head_entropies():
    model = trained_like(activation="relu", norm="none", final_norm="layernorm", bias="all")
    with torch.no_grad():  # a few dead units, so the share is not trivially 0
        model.blocks[1].mlp.fc.bias[:7] = -100.0
    tl = to_transformer_lens(model)
    idx = torch.randint(0, 61, (4, 16))
    with torch.no_grad():
        _, cache = tl.run_with_cache(idx)
        with capture(model, "blocks.*.mlp.hook_act") as ours:
            model(idx)
        ours_entropy = probe_entropy(model, idx)
    for layer in range(2):
        theirs = never_fired_share(fired_units(cache[f"blocks.{layer}.mlp.hook_post"])[None])
        mine = never_fired_share(fired_units(ours[f"blocks.{layer}.mlp.hook_act"])[None])
        torch.testing.assert_close(theirs, mine)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # (B, H, T, T), zeros above the diagonal
        plogp = torch.where(pattern > 0, pattern * pattern.log(), torch.zeros_like(pattern))
        torch.testing.assert_close(-plogp.sum(-1).mean((0, 2)), ours_entropy[layer], rtol=1e-4, atol=1e-5)
    assert never_fired_share(fired_units(cache["blocks.1.mlp.hook_post"])[None]).item() >= 7 / 128


@pytest.mark.parametrize("overrides, phrase", [
    ({"norm": "dyt", "final_norm": "dyt"}, "TransformerLens cannot express norm 'dyt'"),
    ({"final_norm": "derf"}, "TransformerLens cannot express final_norm 'derf'"),
    ({"qk_norm": "rms"}, "TransformerLens cannot express qk_norm 'rms'"),
    ({"embedding_scale": True}, "TransformerLens cannot express embedding_scale"),
    ({"norm": "rmsnorm"}, "cannot express norm 'rmsnorm' with final_norm 'layernorm'"),
])
def test_what_tl_cannot_express_is_refused_in_one_line(overrides, phrase):
    with pytest.raises(ConfigError, match=phrase) as info:
        to_transformer_lens(trained_like(**overrides))
    assert "\n" not in str(info.value)


def test_a_run_folder_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="last.ckpt"):
        to_transformer_lens(tmp_path)


def test_actsweep_hooks_answer_to_transformer_lens_names():
    model = trained_like(activation="gelu")
    idx = torch.randint(0, 61, (2, 16))
    with torch.no_grad(), capture(model, "blocks.*.mlp.hook_post", "blocks.1.hook_resid_post", "blocks.0.mlp.hook_act") as cache:
        model(idx)
    assert set(cache) == {"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post", "blocks.0.mlp.hook_act"}
    torch.testing.assert_close(cache["blocks.0.mlp.hook_post"], cache["blocks.0.mlp.hook_act"])
    tl = to_transformer_lens(model)
    with torch.no_grad():
        _, tl_cache = tl.run_with_cache(idx)
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"], tl_cache["blocks.1.mlp.hook_post"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cache["blocks.1.hook_resid_post"], tl_cache["blocks.1.hook_resid_post"], rtol=1e-4, atol=1e-4)


def test_a_fitted_run_folder_opens_with_its_trained_slopes(tmp_path):
    from actsweep import cli
    from actsweep.train.module import ActSweepModule
    from helpers import write_config

    config = write_config(tmp_path, model={"activation": "learnable_leaky_relu", "norm": "none", "slope_init": 0.3})
    cli.main(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    run = tmp_path / "logs" / "tiny" / "version_0"
    model = ActSweepModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu").model.eval()
    tl = to_transformer_lens(run)
    mlp = tl.blocks[1].mlp
    act = mlp.act_fn if hasattr(mlp, "act_fn") else mlp.original_component.act  # transformer-lens 3.x, 4.x
    assert float(act.slope) == float(model.blocks[1].mlp.act.slope) != 0.3
    idx = torch.randint(0, model.cfg.vocab_size, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(tl(idx), model(idx), rtol=0, atol=1e-4)


def test_each_release_line_gets_its_own_kind_of_model():
    """3.x: a HookedTransformer; 4.x (CI runs this file again with it): a TransformerBridge."""
    from importlib.metadata import version

    tl = to_transformer_lens(trained_like())
    expected = "TransformerBridge" if int(version("transformer-lens").split(".")[0]) >= 4 else "HookedTransformer"
    assert type(tl).__name__ == expected
