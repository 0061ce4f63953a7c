"""Reruns and resumes are bit-exact; faults (divergence, interrupted or damaged token caches, unwritable
or full disks) end cleanly with one clear line and leave earlier results intact. CPU, offline."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from actsweep.data import cache
from helpers import (Recorder, finished_fit, fit_error, run_main, snapshot, tiny_modules, tiny_trainer, work_error,
                     write_config)

STOP_AT, MAX_STEPS = 5, 10


class StopAt(Callback):
    """Ends the run after `step` optimizer steps, as an interrupted job would (max_steps unchanged,
    so the learning-rate schedule is the uninterrupted run's)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        trainer.should_stop = trainer.global_step >= self.step


def fit_losses(folder: Path, *callbacks: Callback, ckpt_path: Path | None = None, **model: object) -> dict[int, torch.Tensor]:
    """Training losses by step of a seeded tiny fit with dropout 0.1 (and `model` overrides)."""
    L.seed_everything(7)
    module, data = tiny_modules(folder, **{"dropout": 0.1, **model})
    recorder = Recorder()
    tiny_trainer(folder, [recorder, *callbacks], max_steps=MAX_STEPS).fit(module, data, ckpt_path=ckpt_path)
    return recorder.losses


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, torch.Tensor]:
    return fit_losses(tmp_path_factory.mktemp("uninterrupted"))


def test_rerun_logs_bitwise_identical_losses(uninterrupted, tmp_path):
    again = fit_losses(tmp_path)
    assert list(again) == list(range(MAX_STEPS))
    assert all(torch.equal(again[s], uninterrupted[s]) for s in again)


def test_resume_mid_run_with_dropout_is_bit_exact(uninterrupted, tmp_path):
    """Lightning checkpoints no RNG state: dropout masks must be a function of the step for this to hold."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=STOP_AT)
    first = fit_losses(tmp_path, StopAt(STOP_AT), checkpoints)
    resumed = fit_losses(tmp_path, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert list(first) == list(range(STOP_AT)) and list(resumed) == list(range(STOP_AT, MAX_STEPS))
    assert all(torch.equal(loss, uninterrupted[s]) for s, loss in {**first, **resumed}.items())


class KernelLog(Callback):
    """Whether attention runs on the exact (math) kernel, at the start of each step."""

    def __init__(self) -> None:
        self.exact: dict[int, bool] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.exact[trainer.global_step] = pl_module.model.exact_attention


def test_resume_after_adaptive_attention_switched_kernels_is_bit_exact(tmp_path):
    """The kernel choice is part of the checkpoint: a resumed run goes on with the exact kernel the
    uninterrupted one switched to (a limit of 1e-6 is passed at once: the switch comes after step 0)."""
    switching = dict(norm="none", dropout=0.0, exact_attention_above=1e-6)  # dropout would rule out flash
    whole, first, resumed = KernelLog(), KernelLog(), KernelLog()
    uninterrupted = fit_losses(tmp_path / "whole", whole, **switching)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=STOP_AT)
    losses = fit_losses(tmp_path, StopAt(STOP_AT), checkpoints, first, **switching)
    losses |= fit_losses(tmp_path, resumed, ckpt_path=tmp_path / "ckpt" / "last.ckpt", **switching)
    assert whole.exact == {0: False, **{s: True for s in range(1, MAX_STEPS)}} == first.exact | resumed.exact
    assert all(torch.equal(loss, uninterrupted[s]) for s, loss in losses.items())


def test_cli_divergence_records_status_and_keeps_last_good_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path)
    code, _ = run_main(["fit", "--config", str(config), "--model.lr", "100", "--model.schedule", "constant",
                        "--trainer.max_steps", "30"], capsys)
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    status = json.loads((run / "status.json").read_text())
    assert code == 0 and status["status"] == "diverged" and STOP_AT < status["step"] < 30
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] < status["step"]
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def cache_files(folder: Path) -> dict[str, bytes]:
    """The token caches' contents; metadata without its file stamp (a rebuild has a new mtime)."""
    files = snapshot(folder / "cache")
    for name in [n for n in files if n.endswith(".json")]:
        meta = json.loads(files[name])
        meta.pop("stamp", None)
        files[name] = json.dumps(meta, sort_keys=True).encode()
    return files


def test_interrupted_cache_build_is_never_trusted(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path)
    fit = ["fit", "--config", str(config), "--trainer.max_steps", "2"]
    real_write = cache._write_tokens

    def write_then_die(path: Path, *args: object) -> tuple[int, str]:
        real_write(path, *args)
        raise KeyboardInterrupt  # after the tokens are on disk, before the rename and the metadata

    monkeypatch.setattr(cache, "_write_tokens", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_main(fit, capsys)
    assert not cache_files(tmp_path)  # nothing left, not even a temporary file
    monkeypatch.undo()
    assert run_main(fit, capsys)[0] == 0
    built = cache_files(tmp_path)
    assert sorted(Path(n).suffix for n in built) == [".bin", ".bin", ".json", ".json"]


def test_damaged_cache_is_detected_and_rebuilt_by_fit(tmp_path, capsys):
    config = write_config(tmp_path)
    fit = ["fit", "--config", str(config), "--trainer.max_steps", "2"]
    assert run_main(fit, capsys)[0] == 0
    good = cache_files(tmp_path)
    (train_bin,) = (tmp_path / "cache").glob("*-train-*.bin")
    damaged = bytearray(train_bin.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    train_bin.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match=r"is damaged \(sha256 mismatch\); rebuilding it"):
        assert run_main(fit, capsys)[0] == 0
    assert cache_files(tmp_path) == good


@pytest.fixture()
def earlier_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """The config of a finished tiny fit in `tmp_path/earlier` and a snapshot of its files."""
    config = finished_fit(tmp_path / "earlier")
    return config, snapshot(tmp_path / "earlier")


def test_unwritable_log_folder_is_one_clear_line(earlier_run, tmp_path, capsys):
    config, before = earlier_run
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("a file, not a folder")
    line = fit_error(["fit", "--config", str(config), "--trainer.logger.save_dir", str(not_a_folder / "logs")], capsys)
    assert str(not_a_folder / "logs") in line and "--trainer.logger.save_dir" in line
    assert snapshot(tmp_path / "earlier") == before


def test_disk_full_is_one_clear_line_and_keeps_earlier_results(earlier_run, tmp_path, capsys, monkeypatch):
    config, before = earlier_run
    other = tmp_path / "other.txt"
    other.write_text("a different corpus, so a new token cache is built\n" * 2000)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", disk_full)
    line = work_error(["fit", "--config", str(config), "--data.source", str(other)], capsys)  # while tokenizing
    assert "no space left" in line and str(tmp_path / "earlier" / "cache") in line and "free" in line
    assert snapshot(tmp_path / "earlier") == before  # no partial cache, earlier run and caches intact
