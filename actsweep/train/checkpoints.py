"""Checkpoints that are checked before they are trusted, and saved only after their step's validation.

`ValidatedCheckpoint` is Lightning's `ModelCheckpoint` with two promises:
- On a step where Lightning validates, the step's checkpoint is written after the validation, never
  before: a kill between the two would otherwise resume past a validation that never ran.
- Each file is written atomically (temporary file, fsync, rename) and its sha256 is recorded beside
  it in `<file>.sha256`, so a damaged checkpoint is found before it is loaded (`checkpoint_problem`).
  A checkpoint without that record (Lightning's own writer, a lost file) is checked by reading it
  whole against the CRC-32 that torch's zip format keeps of every entry, or refused.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from actsweep.errors import ConfigError, MissingPathError
from actsweep.io import checksum_path, checksum_problem, naming, remove_orphans, remove_orphans_in, write_checksum

# `--ckpt_path` values that Lightning resolves itself rather than naming a file.
SPECIAL_PATHS = ("last", "best", "hpc", "registry")


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after this training batch (its interval, or the run's end)."""
    if not trainer.enable_validation:
        return False
    if 0 < trainer.max_steps <= trainer.global_step:  # the module stops here and Lightning validates once more
        return True
    # Private: Lightning's own rule (its interval counted in batches or epochs, the epoch's last batch, an
    # early stop); no public name says it. tests/test_lightning_api.py checks it where fits validate.
    loop = trainer.fit_loop
    return loop.epoch_loop._should_check_val_fx(loop._data_fetcher)


class ValidatedCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose step-triggered saves wait for that step's validation, written atomically
    with a sha256 beside each file (a `ChecksummedCheckpointIO` it installs)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)  # resolves `dirpath`
        install_checksums(trainer)  # Lightning's saves and removals go through it
        if stage == "fit" and trainer.is_global_zero and self.dirpath and "://" not in str(self.dirpath):
            remove_orphans_in(self.dirpath)  # a previous fit's, killed or out of space mid-save

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Private: ModelCheckpoint's trigger, skip rule and deferral flag (its own `on_validation_end`
        # honours the flag) have no public names; tests/test_attacks.py kills a fit at a validation's
        # start and finds that no validation is lost.
        step_due = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        if step_due and not self._should_skip_saving_checkpoint(trainer) and validation_follows(trainer):
            self._defer_save_until_validation = True  # `on_validation_end` saves, after the validation
            return
        super().on_train_batch_end(trainer, pl_module, *args)


class ChecksummedCheckpointIO(CheckpointIO):
    """Lightning's checkpoint writer (`inner`, `TorchCheckpointIO` by default) made atomic and
    checked: each file is written under a temporary name, fsync'd, its sha256 recorded in
    `<file>.sha256` and renamed over the target; removing a checkpoint removes its record. A save
    that fails (a full disk) leaves no temporary file and names the checkpoint; what a killed save
    left is removed by the next save of that file. Remote paths (`://`) go to `inner` unchanged.

    `ValidatedCheckpoint` and `SaveOnSignal` install it (`install_checksums`), or pass it yourself:
    `--trainer.plugins actsweep.train.checkpoints.ChecksummedCheckpointIO`."""

    def __init__(self, inner: CheckpointIO | None = None) -> None:
        if isinstance(inner, AsyncCheckpointIO):  # its save returns before the file exists: nothing to hash yet
            raise ConfigError("ChecksummedCheckpointIO cannot wrap an AsyncCheckpointIO; "
                              "use AsyncCheckpointIO(ChecksummedCheckpointIO()) for background writes")
        self.inner = inner or TorchCheckpointIO()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        if "://" in str(path):
            return self.inner.save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        remove_orphans(target)
        try:
            self.inner.save_checkpoint(checkpoint, tmp, storage_options)
            write_checksum(tmp, target)
        except OSError as err:  # give the space back (the status must still be written)
            tmp.unlink(missing_ok=True)
            raise naming(err, target) from err

    def load_checkpoint(self, path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.inner.load_checkpoint(path, *args, **kwargs)  # the inner writer's defaults (CPU) hold

    def remove_checkpoint(self, path) -> None:
        self.inner.remove_checkpoint(path)
        if "://" not in str(path):
            checksum_path(path).unlink(missing_ok=True)

    def teardown(self) -> None:
        self.inner.teardown()


def install_checksums(trainer: L.Trainer) -> None:
    """Make the trainer's checkpoint writer a `ChecksummedCheckpointIO` (wrapping the one it has; inside
    an `AsyncCheckpointIO`, so that the background thread writes, hashes and renames each file whole)."""
    io = trainer.strategy.checkpoint_io
    if isinstance(io, AsyncCheckpointIO):
        if not isinstance(io.checkpoint_io, ChecksummedCheckpointIO):
            io.teardown()  # nothing saved through it yet; its replacement starts its own thread
            trainer.strategy.checkpoint_io = AsyncCheckpointIO(ChecksummedCheckpointIO(io.checkpoint_io))
    elif not isinstance(io, ChecksummedCheckpointIO):
        trainer.strategy.checkpoint_io = ChecksummedCheckpointIO(io)


def save_checked(trainer: L.Trainer, path: str | os.PathLike, weights_only: bool = False) -> None:
    """`trainer.save_checkpoint` through a `ChecksummedCheckpointIO` (every writer of a checkpoint a
    run may resume from goes through one)."""
    install_checksums(trainer)
    trainer.save_checkpoint(path, weights_only)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the checkpoint at `path` cannot be trusted (damaged, not a checkpoint), or None."""
    problem = checksum_problem(path) if checksum_path(path).exists() else unrecorded_problem(path)
    if problem:
        return problem
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception as err:  # torch raises many kinds on a file that is not a checkpoint
        return f"not a readable checkpoint ({type(err).__name__})"
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        return "not a Lightning checkpoint (no state_dict)"
    return None


def unrecorded_problem(path: str | os.PathLike) -> str | None:
    """Why a checkpoint without a sha256 record cannot be trusted, or None: every entry of its zip
    archive is read and checked against its CRC-32 (a flipped weight bit loads without complaint)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError):
        return (f"damaged or unverifiable (no {checksum_path(path).name} beside it, "
                "and not a zip archive whose entries can be checked)")
    if bad:
        return f"damaged (no {checksum_path(path).name} beside it, and the CRC-32 of its entry {bad} differs)"
    return None


def load_checked(path: str | os.PathLike) -> dict:
    """The checkpoint at `path` (CPU, weights only), or a one-line error saying what is wrong with it."""
    if not str(path):
        raise ConfigError("--ckpt_path is empty; name a checkpoint file (e.g. <run>/checkpoints/last.ckpt), "
                          "or leave the option out to start afresh")
    if Path(path).is_dir():
        raise ConfigError(f"--ckpt_path {path} is a directory; name a checkpoint file in it, "
                          f"e.g. {Path(path, 'last.ckpt')}")
    if not Path(path).is_file():
        raise MissingPathError(f"--ckpt_path {path} does not exist")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"--ckpt_path {path} is {problem}; resume from another checkpoint or start afresh")
    return torch.load(path, weights_only=True, map_location="cpu", mmap=True)


def setting_differences(saved: Mapping[str, Any], given: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`prefix+key: saved -> given` for every setting both name with different values (lists = tuples;
    None is a value: `val_windows: 16 -> None` is a change)."""

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return [f"{prefix}{key}: {saved[key]!r} -> {given[key]!r}" for key in sorted(saved)
            if key in given and plain(saved[key]) != plain(given[key])]


# -- what a resumed fit must share with the run it continues -----------------------------------------

RUN_SETTINGS = "actsweep_run_settings"  # the checkpoint's key for `RecordSettings`' settings
# Data settings that say where or how fast, not what: a resume may change them.
DATA_PLACES = ("cache_dir", "pin_memory", "_instantiator")


class RecordSettings(Callback):
    """Keeps in every checkpoint the run's settings outside the model and data hyperparameters that
    change its numbers (seeds, threads, precision, batch), so a resume can be compared with them."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_SETTINGS] = self.settings


def resume_differences(checkpoint: Mapping[str, Any], model: Mapping[str, Any], data: Mapping[str, Any] | None,
                       run: Mapping[str, Any] | None) -> list[str]:
    """What the command line changes of the checkpoint's run (`model.n_embd: 32 -> 64`, ...): the model
    always; with `data` and `run` (a fit: it continues the run), every data setting but its places and
    the `RecordSettings` (a checkpoint written before those were recorded is compared on the rest)."""
    saved_model = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k != "vocab_size"}
    differences = setting_differences(saved_model, model, "model.")  # the vocabulary: the data's tokenizer
    if data is not None:
        saved = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if k not in DATA_PLACES}
        differences += setting_differences(saved, data, "data.")
    if run is not None:
        differences += setting_differences(checkpoint.get(RUN_SETTINGS, {}), run)
    return differences
