"""Stop cleanly when a scheduler says the time is up: save `last.ckpt` at the current step, record the
run `interrupted`, exit. The requeued run resumes from that checkpoint and, since its windows and
dropout masks are functions of seed and step, ends with the losses of an uninterrupted run."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from actsweep.train.checkpoints import save_checked


class Preempted(KeyboardInterrupt):
    """Leaves the training loop once the checkpoint is saved. As an interrupt, Lightning shuts down
    gracefully (exit status 1) and the status callback records the run `interrupted`, not `crashed`."""


def last_checkpoint(trainer: L.Trainer) -> Path:
    """Where the run's `last.ckpt` is, the file a resumed run starts from."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class SaveOnSignal(Callback):
    """On `signal_name` (SLURM's warning, sent by submitit's `--signal=USR2@90` or `scancel --signal=USR2`):
    at the end of the current step, save `last.ckpt` and stop the run as `interrupted`.

    The actsweep CLI adds it to every fit. One process per run: under DDP, each rank would need the
    signal at the same step.
    """

    def __init__(self, signal_name: str = "SIGUSR2") -> None:
        self.signum = signal.Signals[signal_name]
        self.received = False
        self._previous = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._receive)

    def _receive(self, signum: int, frame) -> None:
        self.received = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.received:
            return
        path = last_checkpoint(trainer)
        save_checked(trainer, path)
        message = f"{self.signum.name} at step {trainer.global_step}: saved {path} to resume from"
        rank_zero_info(f"SaveOnSignal: {message}")
        raise Preempted(message)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None
