"""NormStats against explicit computations: the logged scalars equal the parameters, and the
saturated shares equal closed-form thresholds applied to the norms' inputs on the same batch."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from actsweep.stats import NormStats
from actsweep.train.module import ActSweepModule
from helpers import ScalarLogger

VOCAB, T = 23, 12
TINY = dict(vocab_size=VOCAB, block_size=T, n_layer=2, n_head=2, n_embd=16, lr=1e-2, weight_decay=0.0)
DATA = torch.randint(0, VOCAB, (8, T + 1), generator=torch.Generator().manual_seed(0))


def saturated(kind: str, norm, x: torch.Tensor) -> float:
    """Where the slope relative to the origin's drops below 0.1, solved for the input by hand."""
    if kind == "dyt":  # 1 - tanh²(u) < 0.1  <=>  |u| > atanh(sqrt(0.9))
        mask = (norm.alpha * x).abs() > math.atanh(math.sqrt(0.9))
    elif kind == "derf":  # exp(-u²) < 0.1  <=>  |u| > sqrt(ln 10)
        mask = (norm.alpha * x + norm.shift).abs() > math.sqrt(math.log(10))
    else:  # (c / (c + x²))^1.5 < 0.1  <=>  x² > c (10^(2/3) - 1)
        c = norm.beta + norm.eps
        mask = x.square() > c * (10 ** (2 / 3) - 1)
    return mask.float().mean().item()


@pytest.mark.parametrize("kind, final", [("dyt", "derf"), ("dyisru", "dyt")])
def test_logged_scalars_and_saturation_equal_explicit_computation(tmp_path, kind, final):
    torch.manual_seed(0)
    module = ActSweepModule(**TINY, norm=kind, final_norm=final, embedding_scale=True, dyisru_beta=5e-3,
                            norm_alpha_attn=40.0, norm_alpha_ffn=20.0, norm_alpha_final=10.0, derf_shift=0.3)
    model, shares = module.model, {}
    sites = {f"attn/layer_{i}": b.norm_attn for i, b in enumerate(model.blocks)}
    sites |= {f"ffn/layer_{i}": b.norm_mlp for i, b in enumerate(model.blocks)} | {"final": model.norm_final}
    for tag, norm in sites.items():  # the explicit computation, on the training forward's own inputs and scalars
        kind_here = final if tag == "final" else kind
        norm.register_forward_hook(lambda m, args, out, tag=tag, k=kind_here: shares.__setitem__(tag, saturated(k, m, args[0].detach())))
    recorder = ScalarLogger()
    loader = DataLoader([(r[:-1], r[1:]) for r in DATA], batch_size=8)
    L.Trainer(callbacks=[NormStats()], max_steps=1, logger=recorder, accelerator="cpu", devices=1,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              log_every_n_steps=1, default_root_dir=tmp_path).fit(module, loader)

    for tag, norm in sites.items():  # scalars are logged after the step: the final parameters
        assert recorder.last(f"norm/saturated/{tag}") == pytest.approx(shares[tag], abs=1e-7)
        for name in {"dyt": ["alpha"], "derf": ["alpha", "shift"], "dyisru": ["beta"]}[final if tag == "final" else kind]:
            assert recorder.last(f"norm/{name}/{tag}") == pytest.approx(float(getattr(norm, name)), rel=1e-6)
    assert any(0 < s < 1 for s in shares.values())  # the thresholds were actually exercised
    assert recorder.last("norm/embedding_scale") == pytest.approx(float(model.embedding_scale.scale), rel=1e-6) != math.sqrt(16)


def test_silent_for_layernorm_models(tmp_path):
    recorder, stats = ScalarLogger(), NormStats()
    loader = DataLoader([(r[:-1], r[1:]) for r in DATA], batch_size=8)
    L.Trainer(callbacks=[stats], max_steps=1, logger=recorder, accelerator="cpu", devices=1,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              log_every_n_steps=1, default_root_dir=tmp_path).fit(ActSweepModule(**TINY), loader)
    assert stats.computations == 0 and not any(t.startswith("norm/") for t in recorder.scalars)


def test_new_switches_reach_actsweep_fit_and_log(tmp_path):
    """One tiny `actsweep fit` with DyT, QK-norm, ReLU² and the entropy regulariser from the config."""
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from actsweep import cli
    from helpers import write_config

    config = write_config(tmp_path, model={"norm": "dyt", "final_norm": "derf", "qk_norm": "rms", "activation": "relu2",
                                           "entropy_reg": True, "embedding_scale": True, "decay_norm_scalars": True})
    spec = yaml.safe_load(config.read_text())
    spec["trainer"]["callbacks"].append("actsweep.stats.NormStats")
    config.write_text(yaml.safe_dump(spec))
    cli.main(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    events = EventAccumulator(str(tmp_path / "logs" / "tiny" / "version_0")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"norm/alpha/attn/layer_1", "norm/shift/final", "norm/saturated/ffn/layer_0", "norm/embedding_scale",
            "train/entropy_reg", "train/entropy_reg/layer_1"} <= tags
