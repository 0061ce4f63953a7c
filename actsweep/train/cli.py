"""LightningCLI for actsweep: `fit`, `validate`, `test` with data sizes linked into the model.

Bad input is refused before anything is written: parse errors become one line, a `--ckpt_path` is
checked (present, intact, its model settings those of the command line), and a fit never enters a
run folder that already holds a finished or diverged run.
"""

from __future__ import annotations

import json
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentError, DefaultHelpFormatter, set_parsing_settings
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from actsweep.data.module import TextDataModule
from actsweep.errors import ActSweepError, ConfigError
from actsweep.io import hold_run
from actsweep.status import read_run_info, read_status, write_run_info
from actsweep.train.checkpoints import SPECIAL_PATHS, load_checked, setting_differences
from actsweep.train.module import ActSweepModule
from actsweep.train.preemption import SaveOnSignal


DESCRIPTION = """actsweep: FFN activations x normalization x learning rate x attention in small GPTs.

  actsweep fit --config configs/quickstart.yaml [--model.activation relu ...]   train one run
  actsweep validate|test --config ... --ckpt_path ...                           evaluate a checkpoint
  actsweep sweep configs/sweeps/quickstart.yaml [--jobs N] [--dry-run]          run a grid, resumably
  actsweep report lightning_logs/sweeps/quickstart                              tables and figures"""
SUBCOMMANDS = ("fit", "validate", "test")
DONE = ("finished", "diverged")


class HelpFormatter(DefaultHelpFormatter, RawDescriptionHelpFormatter):
    """jsonargparse's help (type and default of every option) under our hand-wrapped description."""


class ActSweepCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # No `predict`: the module has no predict step.
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        # Sizes come from the data; the model never repeats them.
        parser.link_arguments("data.block_size", "model.block_size")
        parser.link_arguments("data", "model.vocab_size", compute_fn=TextDataModule.model_vocab_size,
                              apply_on="instantiate")
        parser.add_argument(
            "--train_seed", type=Optional[int], default=None,
            help="seed of the training randomness (window order, dropout), applied after the model is "
                 "built; default: seed_everything, which then seeds everything. ReLU's Revival built "
                 "its model from 1337 and trained from the HF Trainer's 42 (configs/revival.yaml)")
        parser.link_arguments(("seed_everything", "train_seed"), "data.seed", compute_fn=training_seed)
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
        try:
            self.run_info = json.loads(config.get("run_info") or "null")
        except ValueError as err:
            raise ConfigError(f"--run_info is a JSON object ({err})") from err
        threads = apply_threads(config.get("threads"))
        config.threads = threads  # recorded in the run's config.yaml

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` instead of Lightning's default, which silently replaces the command
        line's model settings by the checkpoint's: here a contradiction is refused, listed."""
        subcommand = self.config.get("subcommand")
        path = subcommand and self.config[subcommand].get("ckpt_path")
        if not path or path in SPECIAL_PATHS:
            return
        saved = load_checked(path).get("hyper_parameters", {})
        differences = setting_differences(saved, self.config[subcommand].model)
        if differences:
            raise ConfigError(f"--ckpt_path {path} was trained with other model settings ({'; '.join(differences)}); "
                              "use the run's own config.yaml, or drop --ckpt_path to start afresh")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # jsonargparse wraps what a link's compute_fn raises
            if isinstance(err.__cause__, (ActSweepError, OSError)):  # cli.main words these
                raise err.__cause__ from None
            raise

    def instantiate_trainer(self, **kwargs: Any):
        # Under SLURM only submitit requeues (actsweep.study.slurm): Lightning's own auto-requeue is off.
        configured = self.config_init.get(f"{self.subcommand}.trainer.plugins" if self.subcommand else "trainer.plugins")
        if SLURMEnvironment.detect() and not configured:
            kwargs.setdefault("plugins", [SLURMEnvironment(auto_requeue=False)])
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # Lightning's word for bad trainer settings
            raise ConfigError(f"trainer settings: {err}") from err
        if not any(isinstance(callback, SaveOnSignal) for callback in trainer.callbacks):
            trainer.callbacks.append(SaveOnSignal())
        return trainer

    def before_fit(self) -> None:
        """Refuse to overwrite finished work (a fit, not a resume, into a finished or diverged run's
        folder); hold the run folder; derive accumulation from a named global batch (the module logs
        the effective one when training starts) and record the run's sweep metadata (merged into what
        the launcher recorded: the run's CPUs and devices)."""
        trainer = self.trainer
        config = self.config[self.subcommand]
        status = trainer.log_dir and (read_status(trainer.log_dir) or {}).get("status")
        if status in DONE and not config.get("ckpt_path"):
            raise ConfigError(f"{trainer.log_dir} already holds a {status} run; choose another "
                              "--trainer.logger.version (or name), or delete that folder to run it again")
        # One process per run folder, from before anything is written into it until this process exits
        # (not earlier: a fit refused as bad input leaves no trace). Under DDP the first process holds
        # it for all: the others are its own children or srun tasks.
        folder = run_folder(config.trainer.logger)
        if folder is not None and rank_zero_only.rank == 0:
            hold_run(folder)
        if config.get("train_seed") is not None:
            torch.manual_seed(config.train_seed)  # dropout's stream from here on, on every device
        wanted = config.get("global_batch_size")
        if wanted is not None:
            processes = trainer.num_devices * trainer.num_nodes
            trainer.accumulate_grad_batches = accumulation_for(wanted, self.datamodule.batch_size, processes)
        if self.run_info and trainer.log_dir:
            write_run_info(trainer.log_dir, {**(read_run_info(trainer.log_dir) or {}), **self.run_info})


def training_seed(seed_everything: Any, train_seed: int | None) -> Any:
    """The seed of the training windows: `train_seed` when given, else `seed_everything`."""
    return seed_everything if train_seed is None else train_seed


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


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def cli_kwargs() -> dict:
    # GPTConfig documents each field with an attribute docstring: that is the option's help.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    strict = {"exit_on_error": False}  # parse errors raise, and become one line
    return dict(
        model_class=ActSweepModule,
        datamodule_class=TextDataModule,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION, "formatter_class": HelpFormatter, **strict,
                       **{name: strict for name in SUBCOMMANDS}},
    )


def run_cli(args: list[str] | None = None) -> ActSweepCLI:
    try:
        return ActSweepCLI(**cli_kwargs(), args=args)
    except ArgumentError as err:
        raise ConfigError(one_line(err)) from err


class _Parser(Exception):
    """Carries the CLI's parser out of its constructor, before anything is parsed or built."""


class _ParserOnly(ActSweepCLI):
    def parse_arguments(self, parser, args) -> None:
        raise _Parser(parser)


def check_fit_args(runs: dict[str, list[str]]) -> None:
    """Parse every run's `fit` arguments (name -> argv after `fit`) as `actsweep fit` would, building
    nothing: an unknown key or a value of the wrong type is refused, naming the run, before any runs."""
    try:
        _ParserOnly(**cli_kwargs(), args=[])
    except _Parser as built:
        parser = built.args[0]
    for name, args in runs.items():
        try:
            parser.parse_args(["fit", *args])
        except ArgumentError as err:
            raise ConfigError(f"run {name} would not start: {one_line(err)}") from err
