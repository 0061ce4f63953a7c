"""Stop a run at a non-finite training loss, never checkpoint the diverged state, record its status.

Each step folds "is the loss finite?" into a device-side first-bad-step tensor with pure tensor ops
(no host sync). The flag is read only where it matters: on logging steps, and wherever a
`ModelCheckpoint` may save (its step or time trigger, validation end, epoch end, train end; there the
weights are checked too). Lightning moves checkpoint callbacks to the end of the list, so this
callback's hooks run before their saves; on divergence it sets `trainer.should_stop` and takes the
checkpoint callbacks out of `trainer.callbacks`, so the last checkpoint on disk stays the last good
one, and records the run `diverged` (`actsweep.status`; the fit's `RunStatus` records the rest).

`nonfinite="skip"` is the Hugging Face Trainer's behaviour under a GradScaler instead (ReLU's Revival's
LN-free fp16 runs produced NaNs and went on): a step whose gradients are not all finite is skipped
(every gradient dropped before the optimizer sees it: no update, no decay, no optimizer state
change; a GradScaler still lowers its scale), counted per block as `nonfinite/skipped_steps` and
`nonfinite/skipped/layer_i` (cumulative, logged at each skip), and training goes on; a non-finite
loss no longer stops the run, non-finite weights still do. It costs one host read per step.
"""

from __future__ import annotations

import math
from typing import Mapping

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from actsweep.errors import ConfigError
from actsweep.declarations import Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import all_reduce_, is_logging_step, logger_step, publish
from actsweep.stats.gradients import block_parameters
from actsweep.stats.metrics import all_finite, first_bad_step
from actsweep.status import advance

_NEVER = 2**62  # "no bad step yet": larger than any step, so a MIN across processes finds the first
NONFINITE_POLICIES = ("stop", "skip")


def checkpoint_due(trainer: L.Trainer) -> bool:
    """Whether a `ModelCheckpoint` may save at this training batch end (its step or time trigger).

    Reads ModelCheckpoint's private trigger settings (they have no public getters);
    tests/test_lightning_api.py checks this against the checkpoints a real fit writes."""
    return any(
        cb._train_time_interval is not None
        or (cb._every_n_train_steps >= 1 and trainer.global_step % cb._every_n_train_steps == 0)
        for cb in trainer.callbacks
        if isinstance(cb, ModelCheckpoint)
    )


class DivergenceGuard(Statistic):
    """Stops the run at the first non-finite training loss or validation loss and records it
    "diverged" in `trainer.log_dir/status.json`, with the first non-finite step (the step axis of
    `train/loss`) and the latest finite validation loss. Under DDP the flag is reduced across
    processes (all stop together); rank 0 writes the file.

    Args:
        val_metric: the logged metric recorded as `val_loss` (the latest finite value).
        nonfinite: ``stop`` (at the first non-finite loss) or ``skip`` (skip steps with non-finite
            gradients and go on, counted per layer, as the HF Trainer under a GradScaler).
    """

    declaration = Declaration(columns=(Column("nonfinite_skipped", "nonfinite/skipped_steps", "", 0, place=220),))  # results.csv only

    def __init__(self, val_metric: str = "val/loss", nonfinite: str = "stop") -> None:
        super().__init__()
        if nonfinite not in NONFINITE_POLICIES:
            raise ConfigError(f"unknown nonfinite policy {nonfinite!r}; choose one of {', '.join(NONFINITE_POLICIES)}")
        self.val_metric, self.nonfinite = val_metric, nonfinite
        self.skipped = 0  # optimizer steps skipped (nonfinite="skip")
        self.skipped_by_layer: dict[int, int] = {}
        self._blocks: dict[int, list[torch.nn.Parameter]] = {}
        self.diverged_at: int | None = None
        self.checks = 0  # host reads of the flag
        self.held_checkpoints: list[Checkpoint] = []  # checkpoint callbacks taken out on divergence
        self._first_bad: torch.Tensor | None = None
        self._log_dir: str | None = None
        self._val_loss: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._log_dir = trainer.log_dir  # a collective under DDP: every process asks here
        if stage == "fit" and self.nonfinite == "skip":
            self._blocks = block_parameters(pl_module.model)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning restored a checkpoint, so a resumed run records the step it resumed at.
        self._first_bad = torch.full((), _NEVER, dtype=torch.int64, device=pl_module.device)
        self.diverged_at, self._val_loss = None, None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and self.nonfinite == "stop":
            self._first_bad = first_bad_step(self._first_bad, loss, logger_step(trainer))
        due = checkpoint_due(trainer)
        if due or is_logging_step(trainer):
            self._check(trainer, pl_module, weights=due)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._first_bad is None:
            return
        value = trainer.callback_metrics.get(self.val_metric)
        if value is not None and math.isfinite(float(value)):
            self._val_loss = float(value)
        elif value is not None and self.diverged_at is None and self.nonfinite == "stop":  # the same on every process: a reduced metric
            step = logger_step(trainer)
            self._diverge(trainer, step, f"non-finite {self.val_metric} at step {step}")
        self._check(trainer, pl_module, weights=True)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        """`skip`: drop every gradient of a step whose gradients are not all finite (after unscaling;
        the same on every process, as the gradients are reduced), and count it per block."""
        if self.nonfinite != "skip":
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if bool(all_finite(p.grad for p in params)):  # the one host read per step
            return
        broken = [layer for layer, block in self._blocks.items()
                  if not bool(all_finite(p.grad for p in block if p.grad is not None))]
        for p in params:
            p.grad = None
        self.skipped += 1
        for layer in broken:
            self.skipped_by_layer[layer] = self.skipped_by_layer.get(layer, 0) + 1
        counts = {f"nonfinite/skipped/layer_{layer}": torch.tensor(float(self.skipped_by_layer.get(layer, 0)))
                  for layer in self._blocks}
        publish(trainer, {"nonfinite/skipped_steps": torch.tensor(float(self.skipped)), **counts})

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "skipped_by_layer": dict(self.skipped_by_layer)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict.get("skipped", 0)
        self.skipped_by_layer = {int(k): v for k, v in state_dict.get("skipped_by_layer", {}).items()}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, weights=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, weights=True)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, weights: bool) -> None:
        """Read the flag (one collective, one transfer); on divergence stop and hold back checkpoints."""
        if self.diverged_at is not None or self._first_bad is None:
            return
        self.checks += 1
        flags = [self._first_bad]
        if weights:
            flags.append(torch.where(all_finite(pl_module.parameters()), _NEVER, logger_step(trainer)))
        first = all_reduce_(torch.stack(flags), "min").tolist()
        if min(first) == _NEVER:
            return
        step = min(first)
        what = "training loss" if first[0] == step else "weights"
        self._diverge(trainer, step, f"non-finite {what} at step {step}")

    def _diverge(self, trainer: L.Trainer, step: int, reason: str) -> None:
        """Stop, take the checkpoint callbacks out (so nothing of this state is saved) and record it."""
        self.diverged_at = step
        trainer.should_stop = True
        self.held_checkpoints = [cb for cb in trainer.callbacks if isinstance(cb, Checkpoint)]
        trainer.callbacks[:] = [cb for cb in trainer.callbacks if not isinstance(cb, Checkpoint)]
        rank_zero_warn(f"DivergenceGuard: {reason}; stopping, no checkpoint of this state is saved")
        if trainer.is_global_zero and self._log_dir is not None:
            advance(self._log_dir, "diverged", step, reason, self._val_loss)
