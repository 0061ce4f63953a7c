"""Shared pieces of the tests: a tiny corpus and config, the CLI run in-process, a callback that
records what training saw, a logger that keeps scalars, and a tiny sweep."""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import threading
from pathlib import Path
from unittest import mock
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import DummyLogger

from actsweep import cli
from actsweep.data.module import TextDataModule
from actsweep.status import write_status
from actsweep.train.module import ActSweepModule

MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "lr": 3e-3, "dropout": 0.1, "warmup": 0.0}
DATA = {"tokenizer": "char", "block_size": 32, "batch_size": 8, "val_windows": 16, "split_by": "char"}
CONFIG = {
    "seed_everything": 7,
    "trainer": {
        "accelerator": "cpu", "devices": 1, "max_steps": 10, "val_check_interval": 5,
        "check_val_every_n_epoch": None, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
        "enable_progress_bar": False, "enable_model_summary": False,
        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": "logs", "name": "tiny"}},
        "callbacks": [
            {"class_path": "actsweep.train.checkpoints.ValidatedCheckpoint",
             "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 5}},
            "actsweep.stats.DivergenceGuard",
        ],
    },
    "model": MODEL,
    "data": DATA,
}


def write_corpus(folder: Path, chars: int = 60_000) -> Path:
    """A plain-text corpus always present offline: the head of the standard library's argparse.py."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.txt"
    path.write_text(Path(argparse.__file__).read_text()[:chars], encoding="utf-8")
    return path


def write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """`folder/tiny.yaml`: `CONFIG` on `folder/corpus.txt`, logs and cache in `folder`; `sections`
    (e.g. `model={"activation": "relu"}`) update the named sections."""
    config = copy.deepcopy(CONFIG)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(folder / "logs")
    config["data"].update(source=str(write_corpus(folder)), cache_dir=str(folder / "cache"))
    for section, values in sections.items():
        config[section].update(values)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def finished_fit(folder: Path) -> Path:
    """Write the tiny config into `folder` and fit it for 2 steps (logs, checkpoint, cache); its config."""
    config = write_config(folder)
    cli.main(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    return config


LIGHTNING_LOGGERS = ("lightning.fabric", "lightning.pytorch")  # each keeps its records to itself


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`actsweep ARGS` in this process: (exit status, stderr). A normal return is status 0."""
    capsys.readouterr()
    # Lightning's INFO lines ("Seed set to", "GPU available") reach this stderr, as on a command line
    # (under pytest its loggers write to pytest's own streams).
    lightning_lines = logging.StreamHandler(sys.stderr)
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addHandler(lightning_lines)
    try:
        with mock.patch.object(sys, "argv", ["actsweep"]):  # not pytest's (LightningCLI warns of both)
            cli.main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).removeHandler(lightning_lines)
    return code, capsys.readouterr().err


def fit_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error of a command that must fail as bad input: exit status 2 and one `actsweep: error:`
    line on stderr, with nothing before or after it (no Lightning line, no usage)."""
    code, err = run_main(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("actsweep: error: "), err
    return lines[0]


def work_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error of a command that fails during its work (the disk fills): exit status 2 and one
    `actsweep: error:` line, after whatever progress the work printed."""
    code, err = run_main(args, capsys)
    lines = [line for line in err.splitlines() if line.startswith("actsweep: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (relative path -> bytes) and folder (-> None) under `folder`, to show that a failed
    run changed nothing: not even an empty folder."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def tiny_modules(folder: Path, batch_size: int = DATA["batch_size"], **model: Any) -> tuple[ActSweepModule, TextDataModule]:
    """The model and data of `CONFIG` for a programmatic `Trainer`, with `model` overrides."""
    data = TextDataModule(**{**DATA, "source": str(write_corpus(folder)), "cache_dir": str(folder / "cache"),
                             "seed": CONFIG["seed_everything"], "batch_size": batch_size})
    data.prepare_data()
    module = ActSweepModule(**{**MODEL, **model}, vocab_size=data.vocab_size, block_size=DATA["block_size"])
    return module, data


def tiny_trainer(folder: Path, callbacks: list[Callback], **kwargs: Any) -> L.Trainer:
    """A quiet CPU trainer logging every step into `folder`."""
    options = dict(accelerator="cpu", devices=1, max_steps=10, log_every_n_steps=1, num_sanity_val_steps=0,
                   limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, default_root_dir=folder)
    return L.Trainer(callbacks=callbacks, **{**options, **kwargs})


class Recorder(Callback):
    """Keeps every training loss and input batch, and `val/loss`, by global step (this process's share
    under DDP); with `out`, each process saves them to `out/rank<r>.pt` at fit end (spawned processes
    return nothing else)."""

    def __init__(self, out: Path | None = None) -> None:
        self.out = out
        self.losses: dict[int, torch.Tensor] = {}
        self.inputs: dict[int, torch.Tensor] = {}
        self.val_losses: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step - 1  # already advanced by the optimizer step
        self.losses[step] = outputs["loss"].detach().clone()
        self.inputs[step] = batch[0].clone()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val_losses[trainer.global_step] = trainer.callback_metrics["val/loss"].clone()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.out is not None:
            torch.save(vars(self), self.out / f"rank{trainer.global_rank}.pt")


class ScalarLogger(DummyLogger):
    """A logger that keeps every logged scalar: tag -> [(step, value), ...]."""

    def __init__(self) -> None:
        super().__init__()
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        for tag, value in metrics.items():
            self.scalars.setdefault(tag, []).append((step, float(value)))

    def last(self, tag: str) -> float:
        return self.scalars[tag][-1][1]


# -- a tiny sweep (sweep runner, report and notebook tests) -----------------------------------

SWEEP_BASE = {
    "trainer": {
        "accelerator": "cpu", "devices": 1, "max_steps": 30, "val_check_interval": 10,
        "check_val_every_n_epoch": None, "log_every_n_steps": 5, "num_sanity_val_steps": 0,
        "enable_progress_bar": False, "enable_model_summary": False,
        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "unused"}},
        "callbacks": [
            {"class_path": "actsweep.train.checkpoints.ValidatedCheckpoint",
             "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 10}},
            "actsweep.stats.DivergenceGuard", "actsweep.stats.FFNStats", "actsweep.stats.GradNorms",
            "actsweep.stats.AttentionEntropy", "actsweep.stats.SlopeMonitor", "actsweep.stats.NonFiniteCounts",
        ],
    },
    "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "lr": 1e-2, "dropout": 0.0},
    "data": {"tokenizer": "char", "block_size": 32, "batch_size": 8, "val_windows": 16, "split_by": "char"},
}
GRID = [{"model.activation": ["relu", "gelu"]}, {"model.activation": ["relu"], "model.lr": [1e6]}]


def write_tiny_base(folder: Path) -> Path:
    """A 2-layer, 32-wide char model on a slice of the standard library's source (always present)."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py")))[:150_000])
    config = json.loads(json.dumps(SWEEP_BASE))
    config["data"].update(source=str(corpus), cache_dir=str(folder / "cache"))
    base = folder / "tiny.yaml"
    base.write_text(yaml.safe_dump(config))
    return base


def write_sweep(path: Path, base: Path, grid=GRID, seeds=(0, 1), **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": "tiny", "base": str(base), "grid": grid, "seeds": list(seeds), **extra}, sort_keys=False))
    return path


def fake_launcher(calls: list):
    """Records each command and finishes the run the way the status callback would."""
    def launch(command: list[str], run_dir: Path, env: dict[str, str]) -> int:
        calls.append(command)
        write_status(run_dir, "finished", 30, "", 1.0)
        return 0
    return launch


def recording_launcher(seen: list, lock: threading.Lock):
    """Like `fake_launcher`, but records each (command, environment), from any of the pool's threads."""
    def launch(command: list[str], run_dir: Path, env: dict[str, str]) -> int:
        with lock:
            seen.append((command, env))
        write_status(run_dir, "finished", 30, "", 1.0)
        return 0
    return launch
