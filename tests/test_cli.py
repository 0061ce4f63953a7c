"""`actsweep fit` end to end: the shipped quickstart config, offline, writing TensorBoard events."""

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actsweep.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_fit_runs_offline_and_logs_train_and_val_loss(tmp_path, no_network):
    main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--trainer.max_steps", "5", "--data.val_windows", "64",
          "--trainer.logger.save_dir", str(tmp_path / "logs"), "--data.cache_dir", str(tmp_path / "cache")])
    (run,) = (tmp_path / "logs" / "quickstart").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/loss", "val/ppl"} <= set(tags)
    (val,) = events.Scalars("val/loss")
    (ppl,) = events.Scalars("val/ppl")
    assert 0 < val.value < 6 and ppl.value == pytest.approx(2.718281828 ** val.value, rel=1e-5)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_unknown_activation_exits_nonzero_listing_valid_names(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "actsweep.cli", "fit", "--config", str(ROOT / "configs/quickstart.yaml"),
         "--model.activation", "swish", "--data.cache_dir", str(tmp_path / "cache"),
         "--trainer.logger.save_dir", str(tmp_path / "logs")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "unknown --model.activation 'swish'" in result.stderr
    assert "relu, gelu, gelu_tanh, leaky_relu, learnable_leaky_relu" in result.stderr
    assert "Traceback" not in result.stderr


def test_sizes_are_linked_from_data_to_model():
    result = subprocess.run(
        [sys.executable, "-m", "actsweep.cli", "fit", "--config", str(ROOT / "configs/quickstart.yaml"),
         "--data.block_size", "64", "--print_config"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "block_size: 64" in result.stdout
    assert "model:\n" in result.stdout and "vocab_size" not in result.stdout.split("data:")[0].split("model:")[1]


def test_train_seed_changes_the_training_randomness_not_the_initial_weights(tmp_path):
    """`--train_seed` (ReLU's Revival: the model from 1337, training from the HF Trainer's 42): the
    same initial weights as without it (frozen here by lr 1e-30), other windows, recorded in
    config.yaml; `--train_seed` equal to the seed is the plain run, bit for bit."""
    import torch
    import yaml

    from actsweep import cli
    from actsweep.study.logs import read_scalars
    from helpers import write_config

    config = write_config(tmp_path, trainer={"max_steps": 3, "val_check_interval": 3}, model={"lr": 1e-30})
    runs = {}
    for version, extra in (("plain", []), ("same", ["--train_seed", "7"]), ("other", ["--train_seed", "42"])):
        cli.main(["fit", "--config", str(config), "--trainer.logger.init_args.version", version, *extra])
        run = tmp_path / "logs" / "tiny" / version
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        losses = read_scalars(run)["train/loss"].tolist()
        runs[version] = (state, losses, yaml.safe_load((run / "config.yaml").read_text()))
    plain, same, other = runs["plain"], runs["same"], runs["other"]
    # one initialisation (lr 1e-30 moves only the zero biases, by ~1e-30)
    assert all(torch.allclose(plain[0][k], other[0][k], rtol=0, atol=1e-20) for k in plain[0])
    assert other[1] != plain[1] and same[1] == plain[1]  # other windows (and dropout) under seed 42
    assert all(torch.equal(plain[0][k], same[0][k]) for k in plain[0])
    assert other[2]["train_seed"] == 42 and plain[2]["train_seed"] is None  # config.yaml says which


def test_under_slurm_lightnings_own_requeue_stays_off_whatever_other_plugins_are_given():
    """Only submitit requeues: a SLURM environment without auto-requeue joins any configured plugins,
    unless one of them is a cluster environment already."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    from actsweep.train.checkpoints import ChecksummedCheckpointIO
    from actsweep.train.cli import with_slurm_environment

    for configured in (None, [], ChecksummedCheckpointIO(), [ChecksummedCheckpointIO(), "bf16-mixed"]):
        plugins = with_slurm_environment(configured)
        (slurm,) = [p for p in plugins if isinstance(p, SLURMEnvironment)]
        assert not slurm.auto_requeue and len(plugins) == (0 if not configured else 1 if not isinstance(configured, list) else 2) + 1
    own = LightningEnvironment()
    assert with_slurm_environment([own]) == [own]


def test_the_top_level_help_names_every_command(capsys):
    from actsweep.cli import COMMANDS

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for command in ("fit", "validate|test", *COMMANDS):
        assert f"  actsweep {command} " in out, command
