"""`actsweep sweep SWEEP.yaml`: run each pending point as its own `fit`, skip or resume, then report.

Planning is `plan` (the same for every launcher); `--launcher local` runs a process pool on this
machine (`launchers`), `--launcher slurm` a SLURM job array (`slurm`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

from actsweep.errors import ActSweepError, OneLineParser
from actsweep.resources import RUNS_PER_DEVICE
from actsweep.study.launcher_choice import Launcher, launcher_for
from actsweep.study.launchers import PendingTooLong
from actsweep.status import DONE
from actsweep.study.plan import done_status, fit_command, plan, restart, run_dir_of
from actsweep.study.records import stale_message, stale_runs, write_manifest
from actsweep.study.slurm_settings import SlurmSettings
from actsweep.study.sweep import Run, Sweep, SweepError, load_sweep, whole_number


def pending(sweep: Sweep, root: Path) -> tuple[list[Run], dict[str, dict]]:
    """The runs still to run, and the final status of those that are done."""
    todo, results = [], {}
    for run in sweep.runs():
        status = done_status(sweep, run, root)
        if status is None:
            todo.append(run)
        else:
            results[run.name] = status
    return todo, results


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


def add_launcher_options(parser: argparse.ArgumentParser) -> None:
    """`--launcher` and one option per SLURM setting, each overriding the sweep file's `launcher:`."""
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: a process pool on this machine (default); slurm: one SLURM job array")
    group = parser.add_argument_group("SLURM settings (--launcher slurm; override the sweep file's launcher: section)")
    for item in fields(SlurmSettings):
        if item.name == "sbatch":
            group.add_argument("--sbatch", action="append", metavar="KEY=VALUE", help=item.metadata["help"])
        else:
            group.add_argument(f"--{item.name.replace('_', '-')}", dest=f"slurm_{item.name}", default=None,
                               type=int if item.type.startswith("int") else str, help=item.metadata["help"])


def launcher_settings(sweep: Sweep, args: argparse.Namespace) -> SlurmSettings:
    chosen = {f.name: getattr(args, f"slurm_{f.name}") for f in fields(SlurmSettings) if f.name != "sbatch"}
    extra = dict(item.split("=", 1) for item in args.sbatch or [] if "=" in item)
    if len(extra) != len(args.sbatch or []):
        raise SweepError(f"--sbatch takes KEY=VALUE, got {args.sbatch!r}")
    return replace(sweep.launcher, **{k: v for k, v in chosen.items() if v is not None},
                   sbatch={**sweep.launcher.sbatch, **extra})


def placed(sweep: Sweep, args: argparse.Namespace, launcher: Launcher) -> Sweep:
    """`sweep` with `--runs-per-device` in place of its file's value; refused where it cannot hold."""
    if args.runs_per_device is not None:
        sweep = replace(sweep, runs_per_device=whole_number(args.runs_per_device, 1, "--runs-per-device"))
    if not launcher.shares_devices and sweep.runs_per_device != RUNS_PER_DEVICE:
        raise SweepError(f"runs_per_device {sweep.runs_per_device} places local jobs; with --launcher {args.launcher} "
                         f"give --runs-per-device {RUNS_PER_DEVICE} (it places each run in its own allocation)")
    return sweep


def check_runs(sweep: Sweep, root: Path, restart_stale: bool) -> dict[str, str]:
    """Before anything runs: every run's fit arguments parse, and no run folder holds work made under
    other settings (unless `restart_stale`); returns the stale runs (name -> what changed)."""
    from actsweep.train.cli import check_fit_args  # Lightning: only once the file itself is sound

    check_fit_args({run.name: fit_command(sweep, run, root)[4:] for run in sweep.runs()})
    stale = stale_runs(sweep, root)
    if stale and not restart_stale:
        raise SweepError(stale_message(stale, root / sweep.name))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="actsweep sweep", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--jobs", type=int, default=1,
                        help="local runs at a time, each on its own CPUs (the sweep's threads per run) and its accelerators "
                             "(shared by at most --runs-per-device runs)")
    parser.add_argument("--runs-per-device", type=int, default=None, metavar="K",
                        help="local jobs that share each accelerator (overrides the sweep file's runs_per_device; "
                             f"default {RUNS_PER_DEVICE}); --jobs may then be up to K × the accelerators")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one fit command per pending run (and, for slurm, what would be submitted); run nothing")
    parser.add_argument("--root", type=Path, default=None,
                        help="where runs go (default lightning_logs/sweeps; with --smoke lightning_logs/smoke)")
    parser.add_argument("--smoke", action="store_true",
                        help="every configuration with its real config for a few steps on a small local corpus "
                             "(prints what it changes; see actsweep/study/smoke.py)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--restart-stale", action="store_true",
                        help="start afresh the runs made with other settings than the sweep file's now")
    add_launcher_options(parser)
    try:
        args = parser.parse_args(argv)
        if args.jobs < 1:
            raise SweepError(f"--jobs must be at least 1, got {args.jobs}")
        sweep = load_sweep(args.sweep_file)
        launcher = launcher_for(args.launcher, args.jobs, launcher_settings(sweep, args))
        sweep = placed(sweep, args, launcher)
        if args.smoke:
            sweep, args.root = smoke(sweep, args.root, args.dry_run)
        args.root = args.root or Path("lightning_logs/sweeps")
        stale = check_runs(sweep, args.root, args.restart_stale)
        if not args.dry_run:
            launcher.check(sweep)  # refuse a sweep the launcher cannot run before anything runs
            restart(sweep, args.root, stale)  # last: nothing is deleted for a sweep refused above
    except ActSweepError as err:  # bad input, or a stale run busy in another process
        print(f"actsweep: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        todo = [run for run in sweep.runs() if run.name in stale or plan(run_dir_of(sweep, run, args.root))[0] != "skip"]
        launcher.dry_run(sweep, args.root, todo, set(stale))
        return 0
    write_manifest(sweep, args.root)
    todo, results = pending(sweep, args.root)
    try:
        results.update(launcher.run(sweep, args.root, todo))
    except PendingTooLong as err:  # the runs are not done: exit 1, as for crashed ones
        print(f"actsweep: stopped waiting: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume{launcher.after_interrupt}", file=sys.stderr)
        return 130
    results = {run.name: results[run.name] for run in sweep.runs()}  # the sweep's order
    print(summary(results, len(todo)))
    if not args.no_report:
        from actsweep.study.report import write_report

        print(f"report: {write_report(args.root / sweep.name, comparisons=sweep.comparisons)}")
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
