"""One run of a sweep, the same under every launcher: what to do with it, its fit command, and doing it.

The run's state is its `status.json` (see `actsweep.status`: written by the fit's status callback, by
`settle` when the process died without a final word) and its `checkpoints/last.ckpt`. `execute` holds the run folder's
lock for the whole fit (the fit shares it), so no two processes ever train or rewrite the same run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable

from actsweep import board
from actsweep.io import LOCK_FD_VAR, RunBusy, clear_run, lock_run
from actsweep.status import busy, is_done, read_run_info, read_status, settle, write_run_info
from actsweep.study.logs import read_scalars
from actsweep.study.records import staleness_settings
from actsweep.study.sweep import Run, Sweep, cli_value


def run_dir_of(sweep: Sweep, run: Run, root: Path) -> Path:
    return Path(root) / sweep.name / run.name


def run_info(sweep: Sweep, run: Run) -> dict:
    """What the report needs to group the run (`run.json`); the fit command carries it too."""
    return {"name": run.name, "config": run.config, "overrides": run.overrides, "seed": run.seed,
            "index": run.index, "label": run.label, "fixed": sweep.fixed, "study": sweep.study,
            "threads": sweep.threads, "comparisons": sweep.comparisons, "settings": staleness_settings(sweep, run)}


def fit_command(sweep: Sweep, run: Run, root: Path, resume: Path | None = None) -> list[str]:
    args = [sys.executable, "-m", "actsweep.cli", "fit", "--config", str(sweep.base)]
    for key, value in {**sweep.fixed, **run.overrides, **sweep.forced}.items():
        args += [f"--{key}", cli_value(value)]
    args += [
        "--seed_everything", str(run.seed),
        "--threads", str(sweep.threads),
        "--trainer.logger.save_dir", str(root),
        "--trainer.logger.name", sweep.name,
        "--trainer.logger.version", run.name,
        # No placeholder hparams at start: the runner writes the real ones when the run is done.
        "--trainer.logger.default_hp_metric", "false",
        # The fit writes run.json itself, so a command pasted from --dry-run is grouped like the rest.
        "--run_info", json.dumps(run_info(sweep, run), separators=(",", ":")),
    ]
    return args + (["--ckpt_path", str(resume)] if resume else [])


def plan(run_dir: Path) -> tuple[str, Path | None]:
    """What to do with a run: ("skip", None), ("resume", checkpoint) or ("start", None)."""
    if is_done(run_dir):
        return "skip", None
    good = last_good_checkpoint(run_dir)
    return ("resume", good) if good else ("start", None)


def last_good_checkpoint(run_dir: Path) -> Path | None:
    """`last.ckpt`, else the newest other checkpoint, that is intact; a damaged one is passed over with
    a warning (resuming it would crash the run on every rerun, or train on corrupted weights)."""
    from actsweep.train.checkpoints import checkpoint_problem  # torch: only where a checkpoint exists

    candidates = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ckpt in sorted(candidates, key=lambda p: p.name != "last.ckpt"):  # last.ckpt first
        problem = checkpoint_problem(ckpt)
        if not problem:
            return ckpt
        warnings.warn(f"{ckpt} is {problem}; not resuming from it", stacklevel=2)
    if candidates:
        warnings.warn(f"{run_dir.name}: no intact checkpoint; starting the run again from scratch", stacklevel=2)
    return None


def restart(sweep: Sweep, root: Path, names: Iterable[str]) -> None:
    """Empty the named runs' folders so that they start afresh: every lock is taken before any folder
    is emptied, so a run busy elsewhere (`RunBusy`) refuses the restart with nothing deleted."""
    locks: dict[str, int] = {}
    try:
        for name in names:
            locks[name] = lock_run(Path(root) / sweep.name / name)
        for name in locks:
            print(f"restarting stale run {name}")
            clear_run(Path(root) / sweep.name / name)
    finally:
        for lock in locks.values():
            os.close(lock)


def write_hparams(run_dir: Path, run: Run) -> None:
    """Put the run in TensorBoard's HParams view, its grid values and seed against its final metrics,
    unless the fit wrote its entry itself (`actsweep.stats.TensorBoardViews`, in every shipped config).

    Written once, when the run is done, into its own event file in the run's folder (so it is the
    same TensorBoard run); the metric values are the scalars the run already logged under those tags.
    """
    if board.has_hparams(run_dir):
        return
    from actsweep.study.columns import every_declaration  # Lightning: only for a run without its entry

    params = {**run.overrides, "seed": run.seed, "status": (read_status(run_dir) or {}).get("status", "unknown")}
    metrics = board.hparams_metrics(every_declaration())
    board.write_hparams(run_dir, params, read_scalars(run_dir), metrics, varied=[*run.overrides, "seed"])


def done_status(sweep: Sweep, run: Run, root: Path) -> dict | None:
    """The final status of a run that is done (its run.json and hparams put right), else None."""
    run_dir = run_dir_of(sweep, run, root)
    if plan(run_dir)[0] != "skip":
        return None
    recorded = read_run_info(run_dir) or {}  # e.g. a run started by hand before run.json existed
    if any(recorded.get(k) != v for k, v in run_info(sweep, run).items()):
        write_run_info(run_dir, {**recorded, **run_info(sweep, run)})
    write_hparams(run_dir, run)
    return read_status(run_dir) or {}


# -- running one fit -----------------------------------------------------------------------------

Launch = Callable[[list[str], Path, dict[str, str]], int]
PIN_VARIABLE = "ACTSWEEP_CPUS"  # the CPUs of a job's slot, for the launcher process to pin


def in_launcher(command: list[str], env: dict[str, str]) -> list[str]:
    """`command` started through `actsweep.study.child`: it dies with this process and keeps to the
    CPUs named in `env` (no `preexec_fn`: this runs in the pool's threads)."""
    return [sys.executable, "-m", "actsweep.study.child", str(os.getpid()), env.get(PIN_VARIABLE, ""), "--", *command]


FITS: set[subprocess.Popen] = set()  # fits this process is running (a SLURM task forwards its signal to them)


def launch_fit(command: list[str], run_dir: Path, env: dict[str, str], log: str = "fit.log") -> int:
    """One fit in its own process, its output appended to `<run_dir>/<log>`; it shares the lock in
    `env[LOCK_FD_VAR]`, keeps to the CPUs in `env[PIN_VARIABLE]` and dies with this process."""
    with open(run_dir / log, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        lock = (int(env[LOCK_FD_VAR]),) if LOCK_FD_VAR in env else ()
        proc = subprocess.Popen(in_launcher(command, env), stdout=log, stderr=subprocess.STDOUT, env=env,
                                pass_fds=lock)
        FITS.add(proc)
        try:
            return proc.wait()
        finally:
            FITS.discard(proc)


def execute(sweep: Sweep, run: Run, root: Path, env: dict[str, str], launch: Launch = launch_fit,
            announce: Callable[[str], None] = lambda action: None, where: dict | None = None) -> dict:
    """Plan and run one run under its folder's lock; returns its final status. `where` (the CPUs
    and devices it was given) goes into its run.json.

    A run held by another live process is left alone and reported as running there.
    """
    run_dir = run_dir_of(sweep, run, root)
    try:
        lock = lock_run(run_dir)
    except RunBusy as err:
        return busy(run_dir, str(err))
    try:
        action, ckpt = plan(run_dir)  # again, under the lock: another process may have finished it
        if action == "skip":
            return done_status(sweep, run, root) or {}
        if action == "start":
            clear_run(run_dir)  # a crash before the first checkpoint: start clean
        write_run_info(run_dir, {**run_info(sweep, run), **(where or {})})
        announce("resuming" if ckpt else "running")
        returncode = launch(fit_command(sweep, run, root, ckpt), run_dir, {**env, LOCK_FD_VAR: str(lock)})
        status = settle(run_dir, returncode, "see fit.log")
        if is_done(run_dir):
            write_hparams(run_dir, run)
        return status
    finally:
        os.close(lock)
