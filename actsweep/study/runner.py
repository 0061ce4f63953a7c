"""`actsweep sweep SWEEP.yaml`: run each planned point as its own `fit`, skip or resume, then report.

The run's state is its `status.json` (written by the status callback; by the runner when the process
died without a final word) and its `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from actsweep.errors import ConfigError
from actsweep.resources import Slot, plan_slots, usable_cpus, visible_accelerators
from actsweep.status import read_status, write_status
from actsweep.study.logs import read_scalars
from actsweep.study.sweep import Run, Sweep, SweepError, cli_value, load_sweep

PIN_VARIABLE = "ACTSWEEP_CPUS"  # the CPUs of a job's slot, for the pre-exec pinning
DONE = ("finished", "diverged")  # a diverged run is a result: never retried
HPARAMS_METRICS = ("val/loss", "val/ppl", "train/loss", "ffn/inactive_frac", "ffn/dead_units", "ffn/act_mean",
                   "grad/norm", "attn/band_max/3", "attn/band_uniform/3", "slope/global")


# -- one run -------------------------------------------------------------------------------------


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
    ]
    return args + (["--ckpt_path", str(resume)] if resume else [])


def plan(run_dir: Path) -> tuple[str, Path | None]:
    """What to do with a run: ("skip", None), ("resume", last.ckpt) or ("start", None)."""
    status = (read_status(run_dir) or {}).get("status")
    if status in DONE:
        return "skip", None
    last = run_dir / "checkpoints" / "last.ckpt"
    return ("resume", last) if last.is_file() else ("start", None)


Launcher = Callable[[list[str], Path, dict[str, str]], int]


def pin_to(env: dict[str, str]) -> Callable[[], None] | None:
    """A pre-exec function that confines the child to its slot's CPUs (named in `env`), if any."""
    cpus = {int(c) for c in env.get(PIN_VARIABLE, "").split(",") if c}
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def launch_fit(command: list[str], run_dir: Path, env: dict[str, str]) -> int:
    """One fit in its own process, its output appended to `<run_dir>/fit.log`."""
    with open(run_dir / "fit.log", "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              preexec_fn=pin_to(env)).returncode


def settle_status(run_dir: Path, returncode: int) -> dict:
    """The run's final status; a process that died without saying so is crashed or interrupted."""
    status = read_status(run_dir) or {"status": "running", "step": 0}
    if status["status"] != "running":
        return status
    if returncode == 0:
        return write_status(run_dir, "finished", status["step"], "", status.get("val_loss"))
    killed = returncode < 0  # a signal: Ctrl-C, the scheduler, the OOM killer
    return write_status(run_dir, "interrupted" if killed else "crashed", status["step"],
                        f"exit code {returncode}; see fit.log", status.get("val_loss"))


def write_hparams(run_dir: Path, run: Run) -> None:
    """Put the run in TensorBoard's HParams view: its grid values and seed against its final metrics.

    Written once, when the run is done, into its own event file in the run's folder (so it is the
    same TensorBoard run); the metric values are the scalars the run already logged under those tags.
    """
    if list(run_dir.glob("*.hparams")):
        return
    from torch.utils.tensorboard.summary import hparams
    from torch.utils.tensorboard.writer import FileWriter

    params = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in run.overrides.items()}
    params.update(seed=run.seed, status=(read_status(run_dir) or {}).get("status", "unknown"))
    tags = read_scalars(run_dir)
    metrics = {tag: float(tags[tag].iloc[-1]) for tag in HPARAMS_METRICS if tag in tags}
    writer = FileWriter(str(run_dir), filename_suffix=".hparams")
    for summary in hparams(params, metrics):
        writer.add_summary(summary)
    writer.close()


# -- the sweep -----------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """'[3/8] running <run> | elapsed 2m10s | ETA 4m' lines, ETA from the mean run time so far."""

    def __init__(self, total: int, jobs: int) -> None:
        self.total, self.jobs, self.started, self.durations = total, jobs, 0, []
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def _eta(self) -> str:
        if not self.durations:
            return "?"
        left = self.total - len(self.durations)
        return clock(sum(self.durations) / len(self.durations) * left / self.jobs)

    def start(self, name: str, action: str) -> None:
        with self.lock:
            self.started += 1
            elapsed = clock(time.monotonic() - self.t0)
            print(f"[{self.started}/{self.total}] {action} {name} | elapsed {elapsed} | ETA {self._eta()}", flush=True)

    def done(self, name: str, status: dict, seconds: float) -> None:
        with self.lock:
            self.durations.append(seconds)
            reason = f" ({status.get('reason')})" if status.get("reason") else ""
            print(f"      {status.get('status')} {name} in {clock(seconds)}{reason}", flush=True)


def slots_for(sweep: Sweep, jobs: int) -> list[Slot]:
    """One slot per concurrent job: its own CPUs (`sweep.threads` of them) and its own accelerators."""
    devices = visible_accelerators()
    per_run = sweep.devices_per_run if sweep.devices_per_run is not None else int(bool(devices))
    return plan_slots(jobs, sweep.threads, per_run, usable_cpus(), devices)


def child_env(slot: Slot, threads: int) -> dict[str, str]:
    """The environment of a fit in `slot`: its devices, its CPUs (applied by `launch_fit`) and thread
    pools sized to the run's own thread count, so the numbers never depend on `--jobs`."""
    env = {**os.environ, **slot.env(), PIN_VARIABLE: ",".join(map(str, slot.cpus))}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_sweep(sweep: Sweep, root: Path, jobs: int = 1, launch: Launcher = launch_fit) -> dict[str, dict]:
    """Run what is not done yet, `jobs` at a time; returns each run's final status by name."""
    todo, results = [], {}
    for run in sweep.runs():
        run_dir = root / sweep.name / run.name
        action, _ = plan(run_dir)
        if action == "skip":
            write_hparams(run_dir, run)
            results[run.name] = read_status(run_dir) or {}
        else:
            todo.append(run)
    progress, free = Progress(len(todo), jobs), queue.SimpleQueue()
    for slot in slots_for(sweep, jobs):
        free.put(slot)

    def execute(run: Run) -> None:
        slot = free.get()
        try:
            run_in(run, slot)
        finally:
            free.put(slot)

    def run_in(run: Run, slot: Slot) -> None:
        run_dir = root / sweep.name / run.name
        action, ckpt = plan(run_dir)
        if action == "start" and run_dir.exists():
            shutil.rmtree(run_dir)  # a crash before the first checkpoint: start clean
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps(
            {"name": run.name, "config": run.config, "overrides": run.overrides, "seed": run.seed,
             "index": run.index, "label": run.label, "fixed": sweep.fixed, "study": sweep.study,
             "threads": sweep.threads, "cpus": list(slot.cpus), "devices": list(slot.devices)}, indent=1))
        progress.start(run.name, "resuming" if ckpt else "running")
        t0 = time.monotonic()
        status = settle_status(run_dir, launch(fit_command(sweep, run, root, ckpt), run_dir, child_env(slot, sweep.threads)))
        if status["status"] in DONE:
            write_hparams(run_dir, run)
        results[run.name] = status
        progress.done(run.name, status, time.monotonic() - t0)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(execute, todo))
    return results


def summary(results: dict[str, dict], launched: int) -> str:
    counts: dict[str, int] = {}
    for status in results.values():
        counts[status.get("status", "unknown")] = counts.get(status.get("status", "unknown"), 0) + 1
    lines = [f"{len(results)} runs ({launched} run now): "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for name, status in results.items():
        if status.get("status") != "finished":
            lines.append(f"  {status.get('status')}: {name} {status.get('reason', '')}".rstrip())
    if counts.get("diverged"):
        lines.append("Diverged runs are results and are not retried; delete a run's folder to run it again.")
    if set(counts) - set(DONE):
        lines.append("Rerun the same command to resume interrupted runs and retry crashed ones.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actsweep sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each on its own CPUs (the sweep's threads per run) and its own accelerators")
    parser.add_argument("--dry-run", action="store_true", help="print one fit command per pending run; run nothing")
    parser.add_argument("--root", type=Path, default=None,
                        help="where runs go (default lightning_logs/sweeps; with --smoke lightning_logs/smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="every configuration with its real config for a few steps on a small local corpus "
                             "(prints what it changes; see actsweep/study/smoke.py)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_file)
        if args.smoke:
            sweep, args.root = smoke(sweep, args.root, args.dry_run)
    except SweepError as err:
        print(f"actsweep sweep: error: {err}", file=sys.stderr)
        return 2
    args.root = args.root or Path("lightning_logs/sweeps")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.dry_run:
        for run in sweep.runs():
            action, ckpt = plan(args.root / sweep.name / run.name)
            if action != "skip":
                print(shlex.join(["actsweep", *fit_command(sweep, run, args.root, ckpt)[3:]]))
        return 0
    try:
        slots_for(sweep, args.jobs)  # refuse a sweep that does not fit the machine before running anything
    except ConfigError as err:
        print(f"actsweep sweep: error: {err}", file=sys.stderr)
        return 2
    try:
        pending = sum(plan(args.root / sweep.name / r.name)[0] != "skip" for r in sweep.runs())
        results = run_sweep(sweep, args.root, args.jobs)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print(summary(results, pending))
    if not args.no_report:
        from actsweep.study.report import write_report

        print(f"report: {write_report(args.root / sweep.name)}")
    if args.smoke:
        return smoke_verdict(results, args.root / sweep.name)
    return 0 if all(s.get("status") in DONE for s in results.values()) else 1


def smoke(sweep: Sweep, root: Path | None, dry_run: bool) -> tuple[Sweep, Path]:
    """The smoke version of `sweep` in a fresh smoke folder under `root`, saying what it changed."""
    import torch

    from actsweep.study.smoke import SMOKE_ROOT, prepare_root, smoke_sweep

    root = root or SMOKE_ROOT
    sweep, notes = smoke_sweep(sweep, root, torch.cuda.is_available())
    if not dry_run:
        prepare_root(root, sweep.name)
    print(f"smoke run of {sweep.name} in {root / sweep.name}; changed from the real runs:")
    print("\n".join(f"  {note}" for note in notes), flush=True)
    return sweep, root


def smoke_verdict(results: dict[str, dict], folder: Path) -> int:
    """0 when every smoke run finished; else 1, with the end of each failed run's log."""
    failed = {name: s for name, s in results.items() if s.get("status") != "finished"}
    for name, status in failed.items():
        log = folder / name / "fit.log"
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.is_file() else []
        print(f"SMOKE FAILED: {name}: {status.get('status')} {status.get('reason', '')}", file=sys.stderr)
        print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    print(f"smoke: {len(results) - len(failed)}/{len(results)} runs finished")
    return 1 if failed else 0
