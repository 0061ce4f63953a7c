"""LightningCLI for actsweep: `fit`, `validate`, `test` with data sizes linked into the model.

Bad input is refused before anything is written: parse errors become one line, a `--ckpt_path` is
checked (present, intact; its model settings those of the command line, and for a fit every other
setting that changes the numbers too), and a fit never enters a run folder that already holds a
finished or diverged run, however its path was reached.

Finished runs are read-only to `validate` and `test`: they log into their own folder,
`<run>/<command>/version_N` (the run that the checkpoint is in, else the logger's folder), which the
report never reads as a run (it reads a run's own event files only, not its subfolders).
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentError, DefaultHelpFormatter, set_parsing_settings
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from actsweep.data.module import TextDataModule
from actsweep.errors import ActSweepError, ConfigError
from actsweep.io import check_config_files, check_free, check_writable, hold_run
from actsweep.status import read_run_info, write_run_info
from actsweep.train.checkpoints import SPECIAL_PATHS, RecordSettings, load_checked, resume_differences
from actsweep.train.epochs import EpochBudget
from actsweep.train.module import ActSweepModule, checked_config
from actsweep.train.optim import adamw_kernel_args
from actsweep.train.schedules import check_run_length
from actsweep.train.preemption import SaveOnSignal
from actsweep.train.run_status import RunStatus
from actsweep.train.run_folders import (redirect_evaluation, refuse_finished_checkpoint, refuse_run_folder, run_folder,
                                        run_root, write_folders)


DESCRIPTION = """actsweep: FFN activations x normalization x learning rate x attention in small GPTs.

  actsweep fit --config configs/quickstart.yaml [--model.activation relu ...]   train one run
  actsweep validate|test --config ... --ckpt_path ...                           evaluate a checkpoint
  actsweep sweep configs/sweeps/quickstart.yaml [--jobs N] [--dry-run]          run a grid, resumably
  actsweep report lightning_logs/sweeps/quickstart                              tables and figures
  actsweep plan-seeds SWEEP_FOLDER --effect 0.085                               seeds a comparison needs
  actsweep sample --ckpt_path .../last.ckpt --prompt 'Once upon'                text from a trained model

Each command has its --help."""
SUBCOMMANDS = ("fit", "validate", "test")
EVALUATIONS = ("validate", "test")
# Lightning's other spellings of a precision (`precision: 32` is `32-true`).
PRECISIONS = {"None": "32-true", "32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


class HelpFormatter(DefaultHelpFormatter, RawDescriptionHelpFormatter):
    """jsonargparse's help (type and default of every option) under our hand-wrapped description."""


def with_slurm_environment(configured: Any) -> list:
    """The configured trainer plugins under SLURM, with Lightning's SLURM environment, its own
    auto-requeue off (only submitit requeues: actsweep.study.slurm), unless one is a cluster environment."""
    plugins = [] if configured is None else list(configured) if isinstance(configured, (list, tuple)) else [configured]
    if not any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


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

    def parse_arguments(self, parser, args) -> None:
        """Parse, then refuse what the settings alone show to be wrong, before Lightning seeds, loads
        a checkpoint or builds anything: a refused command reads no weights and writes nothing."""
        check_config_files(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        if subcommand in EVALUATIONS:
            redirect_evaluation(config, subcommand)
        data = check_settings(config, fit=subcommand == "fit")
        if subcommand == "test":
            data.check_test_split()
        for folder in write_folders(config.trainer, subcommand):
            refuse_run_folder(folder, subcommand)
        folder = run_folder(config.trainer.logger) if subcommand == "fit" else None
        if folder is not None and rank_zero_only.rank == 0:  # the process before_fit's hold_run is in
            check_free(folder)  # before Lightning prints or builds anything

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.run_info = parse_run_info(config.get("run_info"))
        threads = apply_threads(config.get("threads"))
        config.threads = threads  # recorded in the run's config.yaml

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` instead of Lightning's default, which silently replaces the command
        line's model settings by the checkpoint's: here a contradiction is refused, listed. A fit
        continues the checkpoint's run, so its data and run settings must be the run's too; an
        evaluation may choose its own data (other validation windows, the test split)."""
        subcommand = self.config.get("subcommand")
        path = subcommand and self.config[subcommand].get("ckpt_path")
        if path is None or path in SPECIAL_PATHS:
            return
        config, fit = self.config[subcommand], subcommand == "fit"
        checkpoint = load_checked(path)
        differences = resume_differences(checkpoint, config.model, config.data if fit else None,
                                         resume_settings(config) if fit else None)
        if differences:
            raise ConfigError(f"--ckpt_path {path} was trained with other settings ({'; '.join(differences)}); "
                              "use the run's own config.yaml, or drop --ckpt_path to start afresh")
        if fit:
            refuse_finished_checkpoint(path, checkpoint, config.trainer)
        if subcommand == "test":  # before Lightning restores anything (or the data is tokenized)
            state = checkpoint.get(TextDataModule.__qualname__) or {}  # where Lightning keeps a data module's state
            TextDataModule(**settings(config.data)).check_trained_on(state.get("training_corpus"))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # jsonargparse wraps what a link's compute_fn raises
            if isinstance(err.__cause__, (ActSweepError, OSError)):  # cli.main words these
                raise err.__cause__ from None
            raise

    def instantiate_trainer(self, **kwargs: Any):
        configured = self.config_init.get(f"{self.subcommand}.trainer.plugins" if self.subcommand else "trainer.plugins")
        if SLURMEnvironment.detect():
            kwargs.setdefault("plugins", with_slurm_environment(configured))
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ModuleNotFoundError) as err:  # bad settings, or a backend not installed
            raise ConfigError(f"trainer settings: {err}") from err
        for always in (SaveOnSignal, RunStatus):  # every fit records its status and saves on a scheduler's signal
            if not any(isinstance(callback, always) for callback in trainer.callbacks):
                trainer.callbacks.append(always())
        if self.subcommand == "fit":  # what a resume is compared with (threads: resolved by now)
            trainer.callbacks.append(RecordSettings(resume_settings(self.config.fit)))
        return trainer

    def before_fit(self) -> None:
        """Hold the run folder (a fit into a finished one was refused at parsing); derive accumulation
        from a named global batch (the module logs the effective one when training starts) and record
        the run's sweep metadata (merged into what the launcher recorded: the run's CPUs and devices)."""
        trainer = self.trainer
        config = self.config[self.subcommand]
        refuse_run_folder(trainer.log_dir, "fit")  # what the logger resolved, whatever the settings said
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

    def before_validate(self) -> None:
        refuse_run_folder(self.trainer.log_dir, "validate")  # the settings could not say (another logger)

    def before_test(self) -> None:
        refuse_run_folder(self.trainer.log_dir, "test")


def training_seed(seed_everything: Any, train_seed: int | None) -> Any:
    """The seed of the training windows: `train_seed` when given, else `seed_everything`."""
    return seed_everything if train_seed is None else train_seed


def check_settings(config: Any, fit: bool) -> TextDataModule:
    """Refuse, from one command's parsed settings alone (nothing read, built or written), what the
    run would refuse later or crash on: the seed, --run_info, the model's settings (checked without
    its vocabulary, which the data gives), the data's options and the trainer's counts. Returns the
    data module, built (it reads its corpus only when asked for tokens)."""
    for name in ("seed_everything", "train_seed"):
        seed = config.get(name)
        if seed is not None and not isinstance(seed, bool) and not min_seed_value <= seed <= max_seed_value:
            raise ConfigError(f"{name} must lie in {min_seed_value}..{max_seed_value} (numpy's seed range), got {seed}")
    parse_run_info(config.get("run_info"))
    checked_config({**settings(config.model), "vocab_size": 1})
    data = TextDataModule(**settings(config.data))
    check_trainer(config.trainer, fit)
    precision = str(config.trainer.get("precision"))  # Lightning's mixed precisions autocast; 16-mixed scales
    adamw_kernel_args(config.model.adamw_kernel, "cpu", amp=precision.endswith("mixed"),
                      grad_scaler=precision == "16-mixed", clipping=bool(config.trainer.get("gradient_clip_val")))
    for folder in (run_root(config.trainer.logger), data.cache_dir):
        if folder is not None:
            check_writable(folder)
    if config.get("global_batch_size") is not None:  # the processes are known later: a multiple of one batch
        accumulation_for(config.global_batch_size, data.batch_size, 1)
    return data


def settings(section: Any) -> dict[str, Any]:
    """A parsed section's settings, without jsonargparse's `__path__` (set when a file gave them)."""
    return {key: value for key, value in section.as_dict().items() if key != "__path__"}


def check_trainer(trainer: Any, fit: bool) -> None:
    """Trainer counts Lightning takes but divides by (0), never reaches (a fit of no steps) or
    silently misreads (a negative clipping threshold)."""
    if fit:
        if not sets_its_own_length(trainer.get("callbacks")):
            check_run_length(trainer.max_steps)
        if trainer.get("max_epochs") == 0:
            raise ConfigError("max_epochs 0 ends the fit before its first step; leave it out (max_steps ends the run)")
    if (trainer.get("gradient_clip_val") or 0) < 0:
        raise ConfigError(f"gradient_clip_val must be >= 0 (0 or null: no clipping), got {trainer.gradient_clip_val}")
    interval = trainer.get("val_check_interval")
    if interval is not None and not interval > 0:
        raise ConfigError(f"val_check_interval must be positive (training steps, or a fraction of an epoch), "
                          f"got {interval}")
    devices = str(trainer.get("devices"))  # a count (int or text), "auto", or a list of ids
    if devices.lstrip("-").isdigit() and int(devices) < 1 and int(devices) != -1:
        raise ConfigError(f"devices must be >= 1 (or -1 / auto: every one, or a list of ids), got {devices}")
    for name in ("accumulate_grad_batches", "log_every_n_steps"):
        if trainer.get(name) is not None and trainer[name] < 1:
            raise ConfigError(f"{name} must be >= 1, got {trainer[name]}")


def sets_its_own_length(callbacks: Any) -> bool:
    """An `EpochBudget` among the parsed callbacks (jsonargparse gives each its full class_path, also
    for `--trainer.callbacks+=EpochBudget`) sets max_steps itself, from the data, when the fit starts
    (ReLU's Revival's `max_steps: -1`: one epoch)."""
    budget = f"{EpochBudget.__module__}.{EpochBudget.__qualname__}"
    return any(getattr(c, "class_path", None) == budget for c in callbacks or [])


def parse_run_info(text: str | None) -> dict | None:
    """`--run_info`: a JSON object, or None when not given."""
    try:
        info = json.loads(text or "null")
    except ValueError as err:
        raise ConfigError(f"--run_info is a JSON object ({err})") from err
    if info is not None and not isinstance(info, dict):
        raise ConfigError(f"--run_info is a JSON object, e.g. '{{\"seed\": 0}}', got {text}")
    return info


def resume_settings(config: Any) -> dict[str, Any]:
    """What a resumed fit must share with its checkpoint besides the model and data: the settings that
    change its numbers, i.e. the seeds (data's and dropout's), threads (reduction order), precision, batch
    and clipping, and the run's length when the learning-rate schedule spreads over it. Logging,
    validation and where files go are left out."""
    trainer = config.trainer
    settings = {
        "seed_everything": config.get("seed_everything"), "train_seed": config.get("train_seed"),
        "threads": torch.get_num_threads() if config.get("threads") is None else config.threads,
        "global_batch_size": config.get("global_batch_size"),
        "trainer.precision": PRECISIONS.get(str(trainer.get("precision")), str(trainer.get("precision"))),
        "trainer.accumulate_grad_batches": trainer.get("accumulate_grad_batches") or 1,
        "trainer.gradient_clip_val": float(trainer.get("gradient_clip_val") or 0),  # 0 and null: no clipping
        "trainer.gradient_clip_algorithm": trainer.get("gradient_clip_algorithm") or "norm",
    }
    model = config.model
    if model.schedule != "constant" or 0 < model.warmup < 1:  # the schedule's steps depend on max_steps
        settings["trainer.max_steps"] = trainer.max_steps
    return settings


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


def parse_error(err: ArgumentError) -> str:
    """A parse error as one line; a value outside a switch's `Literal` choices as `check_choice` words
    it, with the switch's flag (jsonargparse lists the union's types and their errors instead)."""
    text = str(err)
    key = re.match(r'Parser key "([^"]+)":', text)
    value = re.search(r"Got value: (.*)", text) or re.search(r"Given value: (.*)", text)
    literals = re.findall(r"typing\.Literal\[(.*?)\]", text)
    if not (key and value and literals):
        return one_line(text)
    choices = dict.fromkeys(str(name) for names in literals for name in ast.literal_eval(f"({names},)"))
    return f"unknown --{key[1]} {value[1]!r}; choose one of {', '.join(choices)}"


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
    # Lightning's "Seed set to N" would come before a refusal of the data or model (the seed is in config.yaml).
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    try:
        return ActSweepCLI(**cli_kwargs(), args=args)
    except ArgumentError as err:
        raise ConfigError(parse_error(err)) from err


class _Parser(Exception):
    """Carries the CLI's parser out of its constructor, before anything is parsed or built."""


class _ParserOnly(ActSweepCLI):
    def parse_arguments(self, parser, args) -> None:
        raise _Parser(parser)


def cli_parser() -> Any:
    """The CLI's parser (every subcommand's options), with nothing parsed or built."""
    try:
        _ParserOnly(**cli_kwargs(), args=[])
    except _Parser as built:
        return built.args[0]


def check_fit_args(runs: dict[str, list[str]]) -> None:
    """Parse and check every run's `fit` arguments (name -> argv after `fit`) as `actsweep fit` would,
    building nothing: an unknown key, a value of the wrong type or one out of range is refused, naming
    the run, before any runs."""
    parser = cli_parser()
    check_config_files([arg for args in runs.values() for arg in args])
    for name, args in runs.items():
        try:
            check_settings(parser.parse_args(["fit", *args]).fit, fit=True)
        except ArgumentError as err:
            raise ConfigError(f"run {name} would not start: {parse_error(err)}") from err
        except ActSweepError as err:
            raise ConfigError(f"run {name} would not start: {err}") from err
