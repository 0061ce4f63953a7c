"""Stop cleanly when a scheduler says the time is up: save `last.ckpt` once the current step is
complete (its validation included), record the run `interrupted`, exit. The requeued run resumes
from that checkpoint and, since its windows and dropout masks are functions of seed and step, logs
every value an uninterrupted run logs, validations included."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Sequence

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from actsweep.train.checkpoints import save_checked, validation_follows


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
    """On any of `signal_name` (SLURM's warning, sent by submitit's `--signal=USR2@90` or `scancel
    --signal=USR2`; SIGTERM, what `scancel` and most schedulers send): save `last.ckpt` once the
    current step is complete and stop the run as `interrupted`.

    The save happens where `ValidatedCheckpoint` saves, the two points Lightning resumes from
    exactly: at the step's batch end, or, on a step that validates, at the end of that validation
    (saving before it would resume past a validation that never ran). The run stops at the next
    batch start, after the step's metrics are logged; a signal during the last step lets the run
    finish, final validation included. The actsweep CLI adds it to every fit. Under DDP the ranks
    agree at each of those points whether any of them has the signal (one all-reduce of a flag), so
    all save the same step together, whenever each had it.
    """

    def __init__(self, signal_name: str | Sequence[str] = ("SIGUSR2", "SIGTERM")) -> None:
        names = [signal_name] if isinstance(signal_name, str) else list(signal_name)
        self.signums = [signal.Signals[name] for name in names]
        self.received: signal.Signals | None = None
        self.saved: Path | None = None  # the checkpoint written since the signal
        self._previous: dict[signal.Signals, object] = {}
        self._step_at_start = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._receive) for signum in self.signums}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler, installed after `setup`, stops a run at the end of its
        # epoch too, after the last step: that run would end interrupted with nothing left to resume.
        # In one process this callback takes SIGTERM over; under DDP Lightning's stays (it stops the
        # other processes). `teardown` restores what was there before the fit.
        if signal.SIGTERM in self._previous and trainer.world_size == 1:
            signal.signal(signal.SIGTERM, self._receive)

    def _receive(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.saved is not None:  # the previous step is complete, logged and saved
            raise Preempted(self._message(trainer))
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        stepped = trainer.global_step > self._step_at_start  # not in the middle of gradient accumulation
        if stepped and not validation_follows(trainer) and self._agreed(trainer):
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._agreed(trainer):
            self._save(trainer)

    def _agreed(self, trainer: L.Trainer) -> bool:
        """Whether to save now: this process had the signal, or, under DDP, any rank had it. Called at
        the same points on every rank (a collective); one process asks nothing."""
        if self.saved is not None:
            return False
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(bool(self.received), all=False):
            self.received = self.received or self.signums[0]  # another rank had it: stop alike
        return self.received is not None

    def _save(self, trainer: L.Trainer) -> None:
        self.saved = last_checkpoint(trainer)
        save_checked(trainer, self.saved)
        # Said now: under DDP, Lightning's own SIGTERM handling stops the run before the next batch.
        rank_zero_info(f"SaveOnSignal: {self._message(trainer)}")

    def _message(self, trainer: L.Trainer) -> str:
        return f"{self.received.name} at step {trainer.global_step}: saved {self.saved} to resume from"

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
