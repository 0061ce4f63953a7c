"""`--model.optimizer adamw_hf`: Hugging Face's AdamW update (ReLU's Revival's `adamw_hf`), checked
against the formula written out by hand, one scalar at a time in float64."""

from __future__ import annotations

import math

import pytest
import torch

from actsweep.errors import ConfigError
from actsweep.train.hf_adamw import HFAdamW
from actsweep.train.optim import check_update_rule

LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-8, 0.1


def hf_formula(w0: list[float], grads: list[list[float]]) -> list[float]:
    """transformers' `AdamW.step` for each scalar: m, v; eps added to sqrt(v) before the bias
    correction enters the step size; decay of the *updated* weight after the update."""
    b1, b2 = BETAS
    out = []
    for i, w in enumerate(w0):
        m = v = 0.0
        for t, g in enumerate((step[i] for step in grads), start=1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            w = w - LR * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + EPS)
            w = w - LR * WD * w
        out.append(w)
    return out


def run(optimizer_class, w0: list[float], grads: list[list[float]]) -> list[float]:
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    optimizer = optimizer_class([w], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    return w.detach().tolist()


# gradients of every size, near-zero ones included (where eps placement matters most)
W0 = [0.5, -1.25, 2.0, 1e-3]
GRADS = [[0.3, -2.0, 1e-9, 4.0], [0.1, 1.5, -1e-9, -3.0], [-0.2, 0.5, 2e-9, 1.0], [0.05, -0.1, 0.0, 2.5]]


def test_hf_adamw_is_the_formula():
    assert run(HFAdamW, W0, GRADS) == pytest.approx(hf_formula(W0, GRADS), rel=1e-13, abs=1e-15)


def test_hf_adamw_is_not_torch_adamw():
    """The switch matters: on the same gradients torch's AdamW lands elsewhere (eps and decay order)."""
    ours, torchs = run(HFAdamW, W0, GRADS), run(torch.optim.AdamW, W0, GRADS)
    assert max(abs(a - b) for a, b in zip(ours, torchs)) > 1e-5


def test_state_round_trips_through_a_checkpoint():
    """Resume exactness: two steps, save, load into a new optimizer, two more = four in one go."""
    w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    first = HFAdamW([w], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for g in GRADS[:2]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        first.step()
    second = HFAdamW([w], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    second.load_state_dict(first.state_dict())
    for g in GRADS[2:]:
        w.grad = torch.tensor(g, dtype=torch.float64)
        second.step()
    assert w.detach().tolist() == run(HFAdamW, W0, GRADS)


@pytest.mark.parametrize("optimizer, kernel, message", [
    ("adam", "auto", "unknown optimizer 'adam'; choose one of adamw, adamw_hf"),
    ("adamw_hf", "fused", "--model.adamw_kernel fused applies to torch's AdamW only"),
])
def test_bad_choices_are_refused(optimizer, kernel, message):
    with pytest.raises(ConfigError, match=message):
        check_update_rule(optimizer, kernel)


def test_a_fit_trains_with_adamw_hf(tmp_path):
    from actsweep import cli
    from actsweep.status import read_status
    from helpers import write_config

    config = write_config(tmp_path, trainer={"max_steps": 2, "val_check_interval": 2})
    cli.main(["fit", "--config", str(config), "--model.optimizer", "adamw_hf"])
    run_dir = tmp_path / "logs" / "tiny" / "version_0"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert read_status(run_dir)["status"] == "finished"
    assert checkpoint["hyper_parameters"]["optimizer"] == "adamw_hf"
    assert {s["step"] for s in checkpoint["optimizer_states"][0]["state"].values()} == {2}


def test_adamw_hf_under_a_grad_scaler_logs_the_unscaled_norm(tmp_path):
    """The revival combination (16-mixed GradScaler, clipping 1.0, accumulation) with HF's update:
    Lightning unscales before clipping for it as for torch's AdamW."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from actsweep.stats import GradNorms
    from actsweep.train.module import ActSweepModule
    from helpers import ScalarLogger, tiny_modules, tiny_trainer

    norms = {}
    for precision in ("32-true", "16-mixed"):
        module, data = tiny_modules(tmp_path, dropout=0.0, optimizer="adamw_hf")
        torch.manual_seed(0)
        module = ActSweepModule(**module.hparams)
        plugins = {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]} \
            if precision == "16-mixed" else {"precision": precision}
        logger = ScalarLogger()
        trainer = tiny_trainer(tmp_path, [GradNorms()], max_steps=2, gradient_clip_val=1.0,
                               accumulate_grad_batches=2, logger=logger, **plugins)
        trainer.fit(module, data)
        assert isinstance(trainer.optimizers[0], HFAdamW) and trainer.global_step == 2
        norms[precision] = logger.scalars["grad/norm"][0][1]
    assert norms["16-mixed"] == pytest.approx(norms["32-true"], rel=0.02)  # not x 65536
