"""LightningCLI for actsweep: `fit`, `validate`, `test` with data sizes linked into the model."""

from __future__ import annotations

import json
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import DefaultHelpFormatter, set_parsing_settings
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from actsweep.data.module import TextDataModule
from actsweep.errors import ConfigError
from actsweep.io import hold_run
from actsweep.status import read_run_info, write_run_info
from actsweep.train.module import ActSweepModule
from actsweep.train.preemption import SaveOnSignal


DESCRIPTION = """actsweep: FFN activations x normalization x learning rate x attention in small GPTs.

  actsweep fit --config configs/quickstart.yaml [--model.activation relu ...]   train one run
  actsweep validate|test --config ... --ckpt_path ...                           evaluate a checkpoint
  actsweep sweep configs/sweeps/quickstart.yaml [--jobs N] [--dry-run]          run a grid, resumably
  actsweep report lightning_logs/sweeps/quickstart                              tables and figures"""


class HelpFormatter(DefaultHelpFormatter, RawDescriptionHelpFormatter):
    """jsonargparse's help (type and default of every option) under our hand-wrapped description."""


class ActSweepCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # No `predict`: the module has no predict step.
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser) -> None:
        # Sizes come from the data; the model never repeats them.
        parser.link_arguments("data.block_size", "model.block_size")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.seed")
        parser.add_argument(
            "--threads", type=Optional[int], default=None,
            help="torch CPU threads (default: torch's own choice). Floating-point reductions depend on "
                 "it, so it is part of the run: the resolved value is written to config.yaml")
        parser.add_argument("--run_info", type=Optional[str], default=None,
                            help="JSON: what the report groups this run by (its sweep's grid values, seed, ...), "
                                 "written to run.json in the run folder; the sweep's fit commands fill it in")
        parser.add_argument(
            "--global_batch_size", type=Optional[int], default=None,
            help="sequences per optimizer step over all processes; when set, gradient accumulation is "
                 "derived from it (global / (data.batch_size × processes)), so a study keeps its batch "
                 "when the device count changes; refused when that is not a whole number")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # One process per run folder, from before anything is written into it until this process exits.
        # Under DDP the first process holds it for all: the others are its own children or srun tasks.
        folder = run_folder(config.trainer.logger)
        if folder is not None and rank_zero_only.rank == 0:
            hold_run(folder)
        try:
            self.run_info = json.loads(config.get("run_info") or "null")
        except ValueError as err:
            raise ConfigError(f"--run_info is a JSON object ({err})") from err
        threads = apply_threads(config.get("threads"))
        config.threads = threads  # recorded in the run's config.yaml

    def instantiate_trainer(self, **kwargs: Any):
        # Under SLURM only submitit requeues (actsweep.study.slurm): Lightning's own auto-requeue is off.
        configured = self.config_init.get(f"{self.subcommand}.trainer.plugins" if self.subcommand else "trainer.plugins")
        if SLURMEnvironment.detect() and not configured:
            kwargs.setdefault("plugins", [SLURMEnvironment(auto_requeue=False)])
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(callback, SaveOnSignal) for callback in trainer.callbacks):
            trainer.callbacks.append(SaveOnSignal())
        return trainer

    def before_fit(self) -> None:
        """Derive accumulation from a named global batch, then record the effective global batch and
        the run's sweep metadata (merged into what the launcher recorded: the run's CPUs and devices)."""
        trainer, data = self.trainer, self.datamodule
        processes = trainer.num_devices * trainer.num_nodes
        wanted = self.config[self.subcommand].get("global_batch_size")
        if wanted is not None:
            trainer.accumulate_grad_batches = accumulation_for(wanted, data.batch_size, processes)
        effective = data.batch_size * processes * trainer.accumulate_grad_batches
        for logger in trainer.loggers:
            logger.log_metrics({"batch/global_size": effective, "batch/processes": processes}, step=0)
        if self.run_info and trainer.log_dir:
            write_run_info(trainer.log_dir, {**(read_run_info(trainer.log_dir) or {}), **self.run_info})


def run_folder(logger: Any) -> Path | None:
    """The folder a logger given an explicit `version` writes to; None when each start gets a new one."""
    init = getattr(logger, "init_args", None)
    if init is None or init.get("version") in (None, "") or init.get("save_dir") is None:
        return None
    version = init.version if isinstance(init.version, str) else f"version_{init.version}"
    return Path(init.save_dir, init.get("name") or "", version)


def accumulation_for(global_batch: int, batch_size: int, processes: int) -> int:
    """Micro-batches per optimizer step that make `global_batch` sequences, or a ConfigError."""
    per_step = batch_size * processes
    if global_batch < 1 or global_batch % per_step:
        raise ConfigError(
            f"global_batch_size {global_batch} is not a whole multiple of data.batch_size × processes = "
            f"{batch_size} × {processes}; change --global_batch_size, --data.batch_size or the devices")
    return global_batch // per_step


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (when given) and return the count in force."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def run_cli(args: list[str] | None = None) -> ActSweepCLI:
    # GPTConfig documents each field with an attribute docstring: that is the option's help.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    return ActSweepCLI(
        ActSweepModule,
        TextDataModule,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION, "formatter_class": HelpFormatter},
        args=args,
    )
