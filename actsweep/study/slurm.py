"""The `slurm` launcher: a sweep's pending runs as one SLURM job array, through submitit.

Each array task runs one run through `plan.execute` (the same planning, lock and records as the
local launcher). On the scheduler's warning signal (USR2, `signal_delay` seconds before the time
limit, or `scancel --signal=USR2`) the fit saves `last.ckpt` at its current step and records
`interrupted`; submitit then requeues the task, which resumes from that checkpoint. Lightning's own
SLURM requeue is off (`actsweep.train.cli`), so only submitit requeues.

The submitting side records each run's job id in `<sweep>/slurm/jobs.json` and watches `squeue`; if it
dies, rerunning the same command waits for the runs SLURM still holds and submits only the others.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from actsweep.errors import ActSweepError
from actsweep.io import RunBusy, lock_run, write_atomic
from actsweep.status import read_status, write_status
from actsweep.resources import Slot, usable_cpus, visible_accelerators
from actsweep.study.launchers import Progress, child_env
from actsweep.study.plan import FITS, execute, fit_command, plan, run_dir_of
from actsweep.study.slurm_settings import SlurmSettings
from actsweep.study.sweep import Run, Sweep

JOBS_FILE = "jobs.json"
PREEMPT_SIGNAL = signal.SIGUSR2  # submitit's: sent `signal_delay` seconds before the time limit
FIT_STOP_TIMEOUT = 60  # seconds a fit gets to save its checkpoint after the warning


def slurm_folder(sweep_dir: Path) -> Path:
    """submitit's logs (`<array job>/<job>_<task>_0_log.out|err`) and the job records of a sweep."""
    return Path(sweep_dir) / "slurm"


try:
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency; keep `sweep --help` working without it
    Checkpointable = object


class SweepTask(Checkpointable):
    """One run as one array task: `plan.execute` on the node that SLURM chose."""

    def __call__(self, sweep: Sweep, run: Run, root: Path) -> dict:
        # SLURM placed the task: its CPUs and devices are all the run's, with no pinning on top.
        slot = Slot((), tuple(visible_accelerators()))
        where = {"cpus": usable_cpus(), "devices": list(slot.devices), "slurm_job": os.environ.get("SLURM_JOB_ID")}
        return execute(sweep, run, root, child_env(slot, sweep.threads), where=where)

    def checkpoint(self, sweep: Sweep, run: Run, root: Path):
        """submitit calls this on the warning signal: let the fit save and stop, then requeue this task."""
        stop_fits(PREEMPT_SIGNAL, FIT_STOP_TIMEOUT)
        return super().checkpoint(sweep, run, root)


def stop_fits(signum: int, timeout: float) -> None:
    """Pass `signum` to this process's fits and wait until they have exited (without reaping them:
    `launch_fit` is waiting on them in the frame this signal handler interrupted)."""
    for proc in list(FITS):
        try:
            proc.send_signal(signum)  # they may have had it from SLURM already: saving twice is harmless
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    for proc in list(FITS):
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    break
            except ChildProcessError:  # already reaped
                break
            time.sleep(0.1)


# -- the submitting side -------------------------------------------------------------------------


def read_jobs(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_jobs(folder: Path, jobs: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / JOBS_FILE, json.dumps(jobs, indent=1).encode())


# Job states after which SLURM will not run the job again; any other (pending, requeued, running,
# completing, ...) means the job is still SLURM's.
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "REVOKED", "TIMEOUT"}


def job_name(sweep: Sweep) -> str:
    return f"actsweep-{sweep.name}"


def queued(name: str) -> dict[str, str] | None:
    """State by job id (`123_4`) of this user's jobs named `name` that SLURM still holds, requeued ones
    included (the name guards against job ids reused after the controller's state was wiped).
    None when squeue cannot answer (the controller is busy: ask again)."""
    command = ["squeue", "--noheader", "--array", "--states=all", "--user", getpass.getuser(), "--name", name,
               "--format", "%i|%T"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    states = dict(line.split("|", 1) for line in out.split() if "|" in line)
    return {job: state for job, state in states.items() if state not in ENDED}


def executor(settings: SlurmSettings, folder: Path, sweep: Sweep):
    import submitit

    ex = submitit.SlurmExecutor(folder=folder / "%A")
    ex.update_parameters(job_name=job_name(sweep), **settings.submitit_parameters(sweep.threads))
    return ex


def submit_array(settings: SlurmSettings, folder: Path, sweep: Sweep, root: Path, runs: list[Run]) -> list:
    """One submitit job per run, as one array; a cluster that refuses it is the user's to fix."""
    if shutil.which("sbatch") is None:
        raise ActSweepError("--launcher slurm needs SLURM's sbatch on this machine (a login node of the cluster); "
                            "or use --dry-run to print the fit commands")
    from submitit.core.utils import FailedJobError

    try:
        return executor(settings, folder, sweep).map_array(SweepTask(), [sweep] * len(runs), runs, [root] * len(runs))
    except FailedJobError as err:  # sbatch's own words
        said = "; ".join(line.removeprefix("sbatch: error: ") for line in str(err).strip().splitlines())
        raise ActSweepError(f"SLURM refused the job array: {said}; check the launcher settings") from err


def sbatch_options(settings: SlurmSettings, sweep: Sweep, tasks: int) -> list[str]:
    """The sbatch options the array is submitted with (what `--dry-run` shows)."""
    params = {**settings.submitit_parameters(sweep.threads), "array": f"0-{tasks - 1}%{min(tasks, settings.parallel)}",
              "signal": f"{PREEMPT_SIGNAL.name.removeprefix('SIG')}@{settings.signal_delay}"}
    extra = params.pop("additional_parameters")
    params.pop("array_parallelism"), params.pop("signal_delay_s")
    names = {"gpus_per_node": "gpus-per-node", "cpus_per_task": "cpus-per-task"}
    return [f"--{names.get(k, k)}={v}" for k, v in {**params, **extra}.items()]


def split(sweep: Sweep, root: Path, todo: list[Run]) -> tuple[dict[str, str], list[Run]]:
    """(runs SLURM still holds from an earlier submission: name -> job id, runs to submit)."""
    recorded, active = read_jobs(slurm_folder(root / sweep.name)), queued(job_name(sweep)) or {}
    held = {r.name: recorded[r.name] for r in todo if recorded.get(r.name) in active}
    return held, [r for r in todo if r.name not in held]


def dry_run(sweep: Sweep, root: Path, todo: list[Run], settings: SlurmSettings) -> None:
    held, submit = split(sweep, root, todo)
    for name, job in held.items():
        print(f"# {name}: already queued or running as SLURM job {job}; not submitted again")
    if submit:
        print(f"# would submit {len(submit)} runs as one SLURM job array (submitit), one run per task, with")
        print(f"#   sbatch {' '.join(sbatch_options(settings, sweep, len(submit)))}")
    for run in submit:
        print(shlex.join(["actsweep", *fit_command(sweep, run, root, plan(run_dir_of(sweep, run, root))[1])[3:]]))


def run_slurm(sweep: Sweep, root: Path, todo: list[Run], settings: SlurmSettings, poll: float = 2.0) -> dict[str, dict]:
    """Submit what SLURM does not already hold, wait for every run, return their final statuses."""
    root = root.resolve()  # the tasks may start in another folder
    folder = slurm_folder(root / sweep.name)
    held, submit = split(sweep, root, todo)
    results = {}
    for run in [r for r in submit if run_dir_of(sweep, r, root).exists()]:
        try:
            os.close(lock_run(run_dir_of(sweep, run, root)))
        except RunBusy as err:  # a local sweep or fit has it now
            results[run.name] = {"status": "running", "step": 0, "reason": str(err)}
            submit.remove(run)
    for name, job in held.items():
        print(f"{name}: already queued or running as SLURM job {job}; waiting for it", flush=True)
    if submit:
        jobs = submit_array(settings, folder, sweep, root, submit)
        held.update({run.name: job.job_id for run, job in zip(submit, jobs)})
        write_jobs(folder, {**read_jobs(folder), **held})
        print(f"submitted {len(submit)} runs as SLURM job array {jobs[0].job_id.split('_')[0]} "
              f"(at most {settings.parallel} at once); logs in {folder}", flush=True)
    return {**results, **wait(sweep, root, held, min(settings.parallel, max(1, len(held))), poll)}


def wait(sweep: Sweep, root: Path, jobs: dict[str, str], parallel: int, poll: float) -> dict[str, dict]:
    """Follow `jobs` (run name -> job id) in squeue until SLURM holds none of them."""
    progress, started, results = Progress(len(jobs), parallel), {}, {}
    waiting = dict(jobs)
    while waiting:
        states = queued(job_name(sweep))
        for name, job in list(waiting.items()) if states is not None else []:
            state = states.get(job)
            if state == "RUNNING" and name not in started:
                started[name] = time.monotonic()
                progress.start(name, f"running (job {job})")
            elif state is None:
                results[name] = settle(root / sweep.name / name, job)
                progress.done(name, results[name], time.monotonic() - started.get(name, time.monotonic()))
                del waiting[name]
        if waiting:
            time.sleep(poll)
    return results


def settle(run_dir: Path, job: str) -> dict:
    """The status of a run whose task SLURM no longer holds; one that ended without a final word
    (cancelled, killed at its time limit, a failed node) is interrupted: a rerun resumes it."""
    try:
        lock = lock_run(run_dir)
    except RunBusy as err:
        return {**(read_status(run_dir) or {"step": 0}), "status": "running", "reason": str(err)}
    try:
        status = read_status(run_dir) or {"status": "running", "step": 0}
        if status["status"] != "running":
            return status
        return write_status(run_dir, "interrupted", status["step"],
                            f"SLURM job {job} ended without a final status; see {slurm_folder(run_dir.parent)}",
                            status.get("val_loss"))
    finally:
        os.close(lock)
