"""The `slurm` launcher: a sweep's pending runs as one SLURM job array, through submitit.

Each array task runs one run through `plan.execute` (the same planning, lock and records as the
local launcher). A run that spans devices is one array task of several SLURM tasks (`--nodes`,
`--ntasks-per-node`), which submitit starts with `srun`: task 0 plans and records the run as a
one-process task does and publishes its fit command; every other task runs that same command, and
Lightning's `SLURMEnvironment` joins them under DDP from srun's variables (SLURM_PROCID, ...). On the scheduler's warning signal (USR2, `signal_delay` seconds before the time
limit, or `scancel --signal=USR2`) the fit saves `last.ckpt` at its current step and records
`interrupted`; submitit then requeues the task, which resumes from that checkpoint. Lightning's own
SLURM requeue is off (`actsweep.train.cli`), so only submitit requeues.

The submitting side records each run's job id in `<sweep>/slurm/jobs.json` and watches `squeue`; if it
dies, rerunning the same command waits for the runs SLURM still holds and submits only the others.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from actsweep.errors import ActSweepError, ConfigError
from actsweep.io import RunBusy, lock_run, write_atomic
from actsweep.status import busy, read_object, settle
from actsweep.resources import Slot, usable_cpus, visible_accelerators
from actsweep.study.launchers import PendingTooLong, Progress, child_env, clock
from actsweep.study.plan import FITS, execute, fit_command, launch_fit, plan, run_dir_of
from actsweep.study.slurm_limits import partition_refusal
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


def tasks_per_node(sweep: Sweep) -> int:
    """Processes of a run on each of its nodes: one per device of the run, at least one."""
    return sweep.devices_per_run or 1


def span_args(nodes: int, tasks: int) -> list[str]:
    """The fit options that make a run's SLURM tasks one DDP run (none for a one-process run);
    `SLURMEnvironment` checks that nodes × devices is srun's task count, and Lightning spawns nothing."""
    if nodes * tasks == 1:
        return []
    return ["--trainer.num_nodes", str(nodes), "--trainer.devices", str(tasks), "--trainer.strategy", "ddp"]


def command_file(sweep: Sweep, root: Path) -> Path:
    """Where task 0 of this job attempt publishes the fit command (a requeued attempt gets a new one)."""
    attempt = f"{os.environ.get('SLURM_JOB_ID')}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return slurm_folder(root / sweep.name) / f"{attempt}.fit.json"


class SweepTask(Checkpointable):
    """One run as one array task: `plan.execute` on the node that SLURM chose, in task 0; the
    other tasks of a run that spans devices follow it (`follow`)."""

    def __init__(self, span: list[str] | None = None) -> None:
        self.span = span or []

    def __call__(self, sweep: Sweep, run: Run, root: Path) -> dict:
        # SLURM placed the task: its CPUs and devices are all the run's, with no pinning on top.
        slot = Slot((), tuple(visible_accelerators()))
        env, rank = child_env(slot, sweep.threads), int(os.environ.get("SLURM_PROCID", "0"))
        if rank:
            return follow(command_file(sweep, root), run_dir_of(sweep, run, root), rank, env)
        where = {"cpus": usable_cpus(), "devices": list(slot.devices), "slurm_job": os.environ.get("SLURM_JOB_ID"),
                 "processes": int(os.environ.get("SLURM_NTASKS", "1"))}
        if not self.span:
            return execute(sweep, run, root, env, where=where)
        published = command_file(sweep, root)
        try:
            return execute(sweep, run, root, env, functools.partial(lead, self.span, published), where=where)
        finally:
            if not published.exists():  # nothing to train (done, or busy elsewhere): the others stop too
                publish(published, None)

    def checkpoint(self, sweep: Sweep, run: Run, root: Path):
        """submitit calls this on the warning signal: let the fit save and stop, then requeue this task."""
        stop_fits(PREEMPT_SIGNAL, FIT_STOP_TIMEOUT)
        return super().checkpoint(sweep, run, root)


def publish(path: Path, command: list[str] | None) -> None:
    write_atomic(path, json.dumps({"command": command}).encode())


def lead(span: list[str], published: Path, command: list[str], run_dir: Path, env: dict[str, str]) -> int:
    """Task 0's launch: the fit with the DDP options, published for the other tasks first."""
    publish(published, command + span)
    return launch_fit(command + span, run_dir, env)


def follow(published: Path, run_dir: Path, rank: int, env: dict[str, str], poll: float = 0.2) -> dict:
    """Another task of a run: wait for task 0's fit command and run it too (rank 0 alone holds the
    run's lock and writes its records; this rank's output goes to `fit.rank<N>.log`)."""
    while not published.exists():  # task 0 always publishes, if only "nothing to do"
        time.sleep(poll)
    command = json.loads(published.read_text())["command"]
    if command is None:
        return {"status": "skipped", "rank": rank}
    return {"returncode": launch_fit(command, run_dir, env, log=f"fit.rank{rank}.log"), "rank": rank}

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
    return read_object(folder / JOBS_FILE) or {}


def write_jobs(folder: Path, jobs: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / JOBS_FILE, json.dumps(jobs, indent=1).encode())


# Job states after which SLURM will not run the job again; any other (pending, requeued, running,
# completing, ...) means the job is still SLURM's.
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "REVOKED", "TIMEOUT"}


def job_name(sweep: Sweep) -> str:
    return f"actsweep-{sweep.name}"


def queued(name: str) -> dict[str, tuple[str, str]] | None:
    """(state, pending reason) by job id (`123_4`) of this user's jobs named `name` that SLURM still
    holds, requeued ones included (the name guards against job ids reused after the controller's state
    was wiped). None when squeue cannot answer (the controller is busy: ask again)."""
    command = ["squeue", "--noheader", "--array", "--states=all", "--user", getpass.getuser(), "--name", name,
               "--format", "%i|%T|%r"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    tasks = [line.split("|", 2) for line in out.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in tasks if state not in ENDED}


def parameters(settings: SlurmSettings, sweep: Sweep) -> dict:
    return settings.submitit_parameters(sweep.threads, tasks_per_node(sweep))


def executor(settings: SlurmSettings, folder: Path, sweep: Sweep):
    import submitit

    ex = submitit.SlurmExecutor(folder=folder / "%A")
    ex.update_parameters(job_name=job_name(sweep), **parameters(settings, sweep))
    return ex


def check_submission(settings: SlurmSettings, sweep: Sweep) -> None:
    """Before anything is written: sbatch is here, and a task fits its partition's limits (a task over
    one would pend forever, or be refused after the sweep folder was made)."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm needs SLURM's sbatch on this machine (a login node of the cluster); "
                          "or use --dry-run to print the fit commands")
    tasks = tasks_per_node(sweep)
    if settings.gpus and tasks > 1 and settings.gpus != tasks:  # one process per GPU
        raise ConfigError(f"--gpus {settings.gpus} per node, but a run has devices_per_run {tasks} processes on "
                          f"each node (one per GPU); make them equal")
    why = partition_refusal(settings, sweep.threads, tasks)
    if why:
        raise ConfigError(why)


def submit_array(settings: SlurmSettings, folder: Path, sweep: Sweep, root: Path, runs: list[Run]) -> list:
    """One submitit job per run, as one array (`check_submission` first); a cluster that refuses it is
    the user's to fix."""
    from submitit.core.utils import FailedJobError

    try:
        task = SweepTask(span_args(settings.nodes, tasks_per_node(sweep)))
        return executor(settings, folder, sweep).map_array(task, [sweep] * len(runs), runs, [root] * len(runs))
    except FailedJobError as err:  # sbatch's own words
        said = "; ".join(line.removeprefix("sbatch: error: ") for line in str(err).strip().splitlines())
        raise ActSweepError(f"SLURM refused the job array: {said}; check the launcher settings") from err


def sbatch_options(settings: SlurmSettings, sweep: Sweep, tasks: int) -> list[str]:
    """The sbatch options the array is submitted with (what `--dry-run` shows)."""
    params = {**parameters(settings, sweep), "array": f"0-{tasks - 1}%{min(tasks, settings.parallel)}",
              "signal": f"{PREEMPT_SIGNAL.name.removeprefix('SIG')}@{settings.signal_delay}"}
    extra = params.pop("additional_parameters")
    params.pop("array_parallelism"), params.pop("signal_delay_s")
    names = {"gpus_per_node": "gpus-per-node", "cpus_per_task": "cpus-per-task", "ntasks_per_node": "ntasks-per-node"}
    return [f"--{names.get(k, k)}={v}" for k, v in {**params, **extra}.items()]


def split(sweep: Sweep, root: Path, todo: list[Run]) -> tuple[dict[str, str], list[Run]]:
    """(runs SLURM still holds from an earlier submission: name -> job id, runs to submit)."""
    recorded, active = read_jobs(slurm_folder(root / sweep.name)), queued(job_name(sweep)) or {}
    held = {r.name: recorded[r.name] for r in todo if recorded.get(r.name) in active}
    return held, [r for r in todo if r.name not in held]


def dry_run(sweep: Sweep, root: Path, todo: list[Run], settings: SlurmSettings, restarting: set[str] = frozenset()) -> None:
    held, submit = split(sweep, root, todo)
    for name, job in held.items():
        print(f"# {name}: already queued or running as SLURM job {job}; not submitted again")
    if submit:
        print(f"# would submit {len(submit)} runs as one SLURM job array (submitit), one run per array task, with")
        print(f"#   sbatch {' '.join(sbatch_options(settings, sweep, len(submit)))}")
    span = span_args(settings.nodes, tasks_per_node(sweep))
    for run in submit:
        resume = None if run.name in restarting else plan(run_dir_of(sweep, run, root))[1]
        command = fit_command(sweep, run, root, resume)
        print(shlex.join(["actsweep", *command[3:], *span]))


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
            results[run.name] = busy(run_dir_of(sweep, run, root), str(err))
            submit.remove(run)
    for name, job in held.items():
        print(f"{name}: already queued or running as SLURM job {job}; waiting for it", flush=True)
    if submit:
        jobs = submit_array(settings, folder, sweep, root, submit)
        held.update({run.name: job.job_id for run, job in zip(submit, jobs)})
        write_jobs(folder, {**read_jobs(folder), **held})
        print(f"submitted {len(submit)} runs as SLURM job array {jobs[0].job_id.split('_')[0]} "
              f"(at most {settings.parallel} at once); logs in {folder}", flush=True)
    parallel = min(settings.parallel, max(1, len(held)))
    return {**results, **wait(sweep, root, held, parallel, poll, settings.max_pending)}


def wait(sweep: Sweep, root: Path, jobs: dict[str, str], parallel: int, poll: float,
         max_pending: int | None = None) -> dict[str, dict]:
    """Follow `jobs` (run name -> job id) in squeue until SLURM holds none of them, saying why tasks
    pend; past `max_pending` seconds with none running, cancel them and raise `PendingTooLong`."""
    progress, started, results = Progress(len(jobs), parallel), {}, {}
    waiting, pending = dict(jobs), Pending(max_pending, time.monotonic())
    while waiting:
        tasks = queued(job_name(sweep))
        for name, job in list(waiting.items()) if tasks is not None else []:
            state = tasks.get(job, (None, ""))[0]
            if state == "RUNNING" and name not in started:
                started[name] = time.monotonic()
                progress.start(name, f"running (job {job})")
            elif state is None:
                results[name] = settle_vanished(root / sweep.name / name, job)
                progress.done(name, results[name], time.monotonic() - started.get(name, time.monotonic()))
                del waiting[name]
        if tasks is not None and waiting:
            watch(pending, {job: tasks[job] for job in waiting.values() if job in tasks})
        if waiting:
            time.sleep(poll)
    return results


# What the pending reasons a sweep meets most mean (squeue's %r; `man squeue` lists them all).
REASONS = {
    "PartitionDown": "the partition is down; the tasks start once it is up",
    "PartitionTimeLimit": "--time is over the partition's MaxTime",
    "Resources": "waiting for free CPUs, memory or GPUs",
    "Priority": "other jobs go first",
    "JobArrayTaskLimit": "--parallel tasks of the array run already",
    "QOSMaxJobsPerUserLimit": "the QOS's limit of jobs at once per user is reached",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved",
    "BeginTime": "its start time has not come (a requeued task waits a few seconds)",
    "Dependency": "waiting for another job",
    "JobHeldUser": "held: `scontrol release <job>` lets it go",
    "JobHeldAdmin": "held by an administrator",
}


def explain(reason: str) -> str:
    """"Resources" -> "Resources: waiting for free ..."; reasons with details ("ReqNodeNotAvail,_Unavail...") too."""
    hint = REASONS.get(reason.split(",", 1)[0])
    return f"{reason}: {hint}" if hint else reason


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


class Pending:
    """What the waiting side says of tasks not yet started: their pending reasons, once per change,
    with how long each has pended; and whether the sweep has waited with no task running for longer
    than `max_pending` seconds (tasks pending behind running ones are not stuck)."""

    def __init__(self, max_pending: int | None, now: float) -> None:
        self.max_pending, self.idle_since = max_pending, now
        self.since: dict[str, float] = {}  # pending job -> when it was first seen pending
        self.shown: tuple[str, ...] = ()  # the reasons of the last line printed

    def update(self, tasks: dict[str, tuple[str, str]], now: float) -> str | None:
        """`tasks`: (state, reason) by job id of the jobs waited for; the line to print when the
        reasons changed."""
        pending = {job: reason for job, (state, reason) in tasks.items() if state == "PENDING"}
        if len(pending) < len(tasks):  # a task runs (or is starting, completing): not stuck
            self.idle_since = now
        self.since = {job: self.since.get(job, now) for job in pending}
        by_reason: dict[str, list[str]] = {}
        for job, reason in pending.items():
            if reason != "None":  # "None": the scheduler has not looked at the task yet
                by_reason.setdefault(reason, []).append(job)
        reasons = tuple(sorted(by_reason))
        if reasons == self.shown:
            return None
        self.shown = reasons
        parts = [f"{plural(len(jobs), 'run')} for {clock(now - min(self.since[j] for j in jobs))} ({explain(reason)})"
                 for reason, jobs in sorted(by_reason.items())]
        return f"      pending: {'; '.join(parts)}" if parts else None

    def overdue(self, now: float) -> str | None:
        """Why the sweep stops waiting, or None while it may go on."""
        idle = now - self.idle_since
        if self.max_pending is None or not self.since or idle <= self.max_pending:
            return None
        return (f"{plural(len(self.since), 'run')} pending with none running for {clock(idle)}, over --max-pending "
                f"{self.max_pending} ({', '.join(self.shown) or 'no reason given yet'})")


def watch(pending: Pending, tasks: dict[str, tuple[str, str]]) -> None:
    """Print what changed in why `tasks` pend; past --max-pending, cancel them and give up."""
    now = time.monotonic()
    line = pending.update(tasks, now)
    if line:
        print(line, flush=True)
    overdue = pending.overdue(now)
    if overdue:
        raise PendingTooLong(f"{overdue}; {cancel(list(tasks))}; rerun the same command to submit them again")


def cancel(jobs: list[str]) -> str:
    """`scancel` the jobs; what was done, in words."""
    arrays = ", ".join(dict.fromkeys(job.split("_")[0] for job in jobs))
    try:
        subprocess.run(["scancel", *jobs], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError) as err:
        said = " ".join(str(getattr(err, "stderr", "") or err).split())
        return f"could not cancel them ({said}): scancel {' '.join(jobs)}"
    return f"cancelled {plural(len(jobs), 'task')} of SLURM job array {arrays}"


def settle_vanished(run_dir: Path, job: str) -> dict:
    """The status of a run whose task SLURM no longer holds; one that ended without a final word
    (cancelled, killed at its time limit, a failed node) is interrupted: a rerun resumes it."""
    try:
        lock = lock_run(run_dir)
    except RunBusy as err:
        return busy(run_dir, str(err))
    try:
        return settle(run_dir, None, f"SLURM job {job} ended without a final status; see {slurm_folder(run_dir.parent)}")
    finally:
        os.close(lock)
