"""`--model.matmul_precision` is set for the process before the model is built and recorded in the
run's config and hyperparameters."""

from __future__ import annotations

import pytest
import torch
import yaml

from actsweep import cli
from actsweep.train import module as module_file
from helpers import MODEL, fit_error, write_config


@pytest.fixture(autouse=True)
def keep_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_precision_is_set_before_the_model_is_built(monkeypatch):
    seen = []
    build = module_file.GPT
    monkeypatch.setattr(module_file, "GPT", lambda config: seen.append(torch.get_float32_matmul_precision()) or build(config))
    for precision in ("medium", "high", "highest"):
        module_file.ActSweepModule(**MODEL, vocab_size=50, block_size=16, matmul_precision=precision)
        assert seen[-1] == precision == torch.get_float32_matmul_precision()


def test_fit_records_it_in_config_and_hparams(tmp_path):
    config = write_config(tmp_path)
    cli.main(["fit", "--config", str(config), "--model.matmul_precision", "high", "--trainer.max_steps", "1"])
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["matmul_precision"] == "high"
    assert yaml.safe_load((run / "hparams.yaml").read_text())["matmul_precision"] == "high"


def test_unknown_precision_is_refused(tmp_path, capsys):
    error = fit_error(["fit", "--config", str(write_config(tmp_path)), "--model.matmul_precision", "tf32"], capsys)
    assert "highest, high, medium" in error and "'tf32'" in error
