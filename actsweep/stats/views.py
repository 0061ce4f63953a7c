"""TensorBoard's Custom Scalars and HParams tabs for a single `actsweep fit`.

At the start of training: the Custom Scalars layout (every layer of a statistic on one chart), once
per run. At the end of the fit: the run's HParams entry, its model, data and optimizer settings
against its final validation loss, perplexity and main statistics, in place of Lightning's
start-of-run entry (every constructor argument, internals included, against `hp_metric = -1`).
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from actsweep.board import hparams_metrics, layout, write_hparams
from actsweep.declarations import Declaration
from actsweep.stats.base import declared
from actsweep.stats.common import tensorboard
from actsweep.status import ended

# Arguments that choose how a run executes, not what it computes.
NOT_SETTINGS = {"compile", "cache_dir", "pin_memory"}


def run_settings(model_hparams: dict[str, Any], data_hparams: dict[str, Any]) -> dict[str, Any]:
    """`model.<name>` and `data.<name>` for every setting of the module and the data module, named as
    on the command line; Lightning's internal entries (`_instantiator`, ...) are left out."""
    settings = {}
    for prefix, hparams in (("model", model_hparams), ("data", data_hparams)):
        settings.update({f"{prefix}.{k}": v for k, v in hparams.items() if not k.startswith("_") and k not in NOT_SETTINGS})
    return settings


def fit_declaration(trainer: L.Trainer, pl_module: L.LightningModule) -> Declaration:
    """What this fit shows: the module's own tags (its `declaration`, if any) and its statistics'."""
    return getattr(pl_module, "declaration", Declaration()) + declared(trainer.callbacks)


def logged_tags(log_dir: str) -> list[str]:
    """The scalar tags in a run folder's event files."""
    events = EventAccumulator(log_dir, size_guidance={SCALARS: 1})
    events.Reload()
    return events.Tags()["scalars"]


class TensorBoardViews(Callback):
    """Writes the Custom Scalars layout when training starts and the HParams entry when the fit ends,
    each from what the module and the fit's statistics declare.

    Turns off Lightning's own start-of-run HParams entry (`default_hp_metric`), which would put
    `hp_metric = -1` beside the real metrics."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning logs hyperparameters after `setup`; without a default metric it writes no entry.
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger._default_hp_metric = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.global_step == 0:  # a resumed run has its layout already
            writer.add_custom_scalars(layout(fit_declaration(trainer, pl_module)))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None or not trainer.is_global_zero:
            return
        logger.experiment.flush()
        datamodule = getattr(trainer, "datamodule", None)
        params = run_settings(dict(pl_module.hparams), dict(getattr(datamodule, "hparams", {})))
        if "PL_GLOBAL_SEED" in os.environ:  # set by `seed_everything`
            params["seed"] = int(os.environ["PL_GLOBAL_SEED"])
        params["status"] = ended(logger.log_dir)  # the fit ended without an exception
        metrics = hparams_metrics(fit_declaration(trainer, pl_module))
        write_hparams(logger.log_dir, params, logged_tags(logger.log_dir), metrics)
