"""Where a command writes, and which run folders it must not: a fit never enters a finished or
diverged run nor starts a new one from a finished run's last checkpoint, an evaluation never writes
into a run (its results go to `<run>/<command>/version_N`).
Pure functions of the parsed settings, so the CLI refuses before anything is created."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from actsweep.errors import ConfigError
from actsweep.status import DONE, STATUS_FILE, read_status
from actsweep.train.checkpoints import SPECIAL_PATHS


def refuse_done_folder(folder: str | os.PathLike | None) -> None:
    """Refuse a fit (a resume too) into a finished or diverged run's folder: that work is kept."""
    status = folder is not None and (read_status(folder) or {}).get("status")
    if status in DONE:
        raise ConfigError(f"{folder} already holds a {status} run; choose another "
                          "--trainer.logger.version (or name), or delete that folder to run it again")



def refuse_finished_checkpoint(path: str, checkpoint: dict, trainer: Any) -> None:
    """Refuse to start a new run folder from a checkpoint at its run's last step: Lightning would stop
    at once, leaving a folder with no status and no checkpoint. Its own run folder may take it (a run
    killed after its last checkpoint: the fit ends at once and records it finished)."""
    step, max_steps = checkpoint.get("global_step", 0), trainer.get("max_steps") or -1
    target = run_folder(trainer.logger)
    if 0 < max_steps <= step and (target is None or target.resolve() != Path(path).resolve().parent.parent):
        raise ConfigError(f"--ckpt_path {path} is at step {step}, the end of its run (max_steps {max_steps}): "
                          "nothing is left to train; evaluate it with `actsweep validate` or `actsweep test`, "
                          "or drop --ckpt_path to start afresh")


def refuse_run_folder(folder: str | os.PathLike | None, subcommand: str) -> None:
    """Refuse a command that would write into a run it must not change: a fit into a finished or
    diverged run, an evaluation into any run (its config.yaml and events are the run's)."""
    if subcommand == "fit":
        return refuse_done_folder(folder)
    if folder is not None and holds_run(Path(folder)):
        raise ConfigError(f"{subcommand} would write into the run folder {folder}; give the logger a save_dir "
                          f"(its results then go to <run>/{subcommand}/version_N), or drop that logger setting")



def holds_run(folder: Path) -> bool:
    """Whether `folder` is a fit's: it has a status or checkpoints."""
    return (folder / STATUS_FILE).exists() or (folder / "checkpoints").is_dir()



def write_folders(trainer: Any, subcommand: str) -> list[Path]:
    """The folders a command will write into that its settings alone name: the logger's (an explicit
    version; no logger: `default_root_dir`) and, for a fit, each checkpoint callback's `dirpath` and
    the run folder above it."""
    folders = [log_folder(trainer)]
    if subcommand == "fit":
        dirpaths = [init.get("dirpath") for init in map(init_args, trainer.get("callbacks") or [])
                    if init is not None]
        folders += [folder for path in dirpaths if path for folder in (Path(path), Path(path).parent)]
    return [folder for folder in folders if folder is not None]



def log_folder(trainer: Any) -> Path | None:
    """The folder the trainer logs into, when its settings say; None when each start gets a new one."""
    if trainer.get("logger") is False:  # Lightning writes config.yaml and checkpoints here
        return Path(trainer.get("default_root_dir") or os.getcwd())
    return run_folder(trainer.get("logger"))



def redirect_evaluation(config: Any, subcommand: str) -> None:
    """Point a `validate`/`test` logger at `<folder>/<subcommand>/version_N`, beside the run it
    evaluates and never in it: the folder is the run that holds the checkpoint (`RUN/checkpoints/x.ckpt`
    -> RUN), else the logger's own. A logger without a `save_dir` is left as it is (then the command
    is refused if it would write into a run)."""
    init = init_args(config.trainer.get("logger"))
    if init is None or init.get("save_dir") is None:
        return
    path = config.get("ckpt_path")
    owner = (Path(path).parent.parent if path and path not in SPECIAL_PATHS and Path(path).parent.name == "checkpoints"
             else run_folder(config.trainer.logger) or Path(init.save_dir, init.get("name") or ""))
    init.save_dir, init.name, init.version = str(owner), subcommand, None



def init_args(component: Any) -> Any:
    """The `init_args` of a class given in the config (a logger, a callback), or None."""
    return getattr(component, "init_args", None)



def run_root(logger: Any) -> Path | None:
    """The folder a logger's runs go under (its `save_dir`), when it names one."""
    init = init_args(logger)
    return None if init is None or init.get("save_dir") is None else Path(init.save_dir)



def run_folder(logger: Any) -> Path | None:
    """The folder a logger given an explicit `version` writes to; None when each start gets a new one."""
    init = init_args(logger)
    if init is None or init.get("version") in (None, "") or init.get("save_dir") is None:
        return None
    version = init.version if isinstance(init.version, str) else f"version_{init.version}"
    return Path(init.save_dir, init.get("name") or "", version)
