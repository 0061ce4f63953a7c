"""`actsweep sweep --launcher slurm` against a real SLURM (one node: `.ci/slurm_up.sh`).

Skipped with the reason when SLURM is absent; failed instead when ACTSWEEP_REQUIRE_SLURM=1 (CI).
The sweeps are the tiny 2-layer model of the other sweep tests; most of the time is process start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actsweep.status import read_status
from actsweep.study.logs import read_scalars
from helpers import write_sweep, write_tiny_base

pytestmark = pytest.mark.cluster  # minutes of real SLURM jobs: outside the default suite, a step of .ci/run

REPO = Path(__file__).resolve().parents[1]
GRID = [{"model.activation": ["relu", "gelu"], "model.norm": ["layernorm", "none"]}]
REFERENCE = "activation=relu,norm=layernorm,seed=0"


def slurm_missing() -> str:
    """Why the SLURM tests cannot run here, or "" when a node is up."""
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no `sinfo`); `sudo bash .ci/slurm_up.sh` starts a one-node cluster"
    states = subprocess.run(["sinfo", "--noheader", "--format", "%T"], capture_output=True, text=True).stdout.split()
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"SLURM has no node up (sinfo: {states or 'no answer'}); `sudo bash .ci/slurm_up.sh` starts one"
    return ""


@pytest.fixture(scope="module", autouse=True)
def slurm():
    """Module scope, so that it decides before the module's sweeps are started."""
    reason = slurm_missing()
    if reason and os.environ.get("ACTSWEEP_REQUIRE_SLURM") == "1":
        pytest.fail(f"ACTSWEEP_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)


def task_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{folder}:{REPO}", "OMP_NUM_THREADS": "1"}


def sweep(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = task_env(cwd)
    return subprocess.run([sys.executable, "-m", "actsweep.cli", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slurm")
    write_tiny_base(folder)
    return folder


@pytest.fixture(scope="module")
def grid_sweep(folder) -> tuple[subprocess.CompletedProcess, Path]:
    """A 2×2 grid, one seed, two tasks at a time; returns the sweep's output and its folder."""
    write_sweep(folder / "grid.yaml", folder / "tiny.yaml", GRID, [0], launcher={"parallel": 2, "time": 30})
    return sweep("grid.yaml", "--launcher", "slurm", "--root", "runs", cwd=folder), folder / "runs" / "tiny"


def test_grid_finishes_as_one_array_two_at_a_time_and_reports(grid_sweep):
    result, sweep_dir = grid_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 4 runs as SLURM job array" in result.stdout
    runs = [p for p in sweep_dir.iterdir() if (p / "status.json").is_file()]
    assert len(runs) == 4 and {read_status(p)["status"] for p in runs} == {"finished"}
    (script,) = (sweep_dir / "slurm").glob("*/*_submission.sh")
    assert "#SBATCH --array=0-3%2" in script.read_text() and "#SBATCH --time=30" in script.read_text()
    assert "| relu | none |" in (sweep_dir / "report.md").read_text()
    assert json.loads((sweep_dir / REFERENCE / "run.json").read_text())["overrides"] == {
        "model.activation": "relu", "model.norm": "layernorm"}


def test_rerun_submits_nothing(grid_sweep, folder):
    jobs = (grid_sweep[1] / "slurm" / "jobs.json").read_text()
    result = sweep("grid.yaml", "--launcher", "slurm", "--root", "runs", "--no-report", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted" not in result.stdout and "4 runs (0 run now): 4 finished" in result.stdout
    assert (grid_sweep[1] / "slurm" / "jobs.json").read_text() == jobs


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


ONE_RUN = "activation=relu,seed=0"


def one_run_sweep(folder: Path, **launcher) -> Path:
    """A sweep of the single run `ONE_RUN` in `folder`; returns `folder`."""
    write_sweep(folder / "one.yaml", write_tiny_base(folder), [{"model.activation": ["relu"]}], [0], launcher=launcher)
    return folder


def test_a_task_over_the_partitions_time_limit_is_refused_in_seconds_writing_nothing(tmp_path):
    """Partition `short` has MaxTime=30 (`.ci/slurm_up.sh`): the default --time 60 could never start
    (it would pend as PartitionTimeLimit for ever), so nothing is submitted and nothing written."""
    folder = one_run_sweep(tmp_path)
    before, t0 = tree(folder), time.monotonic()
    result = sweep("one.yaml", "--launcher", "slurm", "--partition", "short", "--root", "runs", cwd=folder, timeout=60)
    assert result.returncode == 2 and time.monotonic() - t0 < 30, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["actsweep: error: --time 60 exceeds partition short's MaxTime of 30 minutes; "
                                          "ask for --time 30 or less, or choose another --partition"]
    assert tree(folder) == before


@pytest.mark.parametrize("devices, option, said", [
    (2, ["--nodes", "0"], "launcher setting 'nodes' is a whole number ≥ 1, got 0"),
    (3, [], "3 processes per node (devices_per_run) × 1 CPUs each exceed the 2 CPUs of partition debug's largest "
            "node; lower devices_per_run or --cpus, or choose another --partition")], ids=["nodes-0", "3-per-node"])
def test_a_run_that_cannot_span_is_refused_writing_nothing(tmp_path, devices, option, said):
    """The one node has 2 CPUs (`.ci/slurm_up.sh`): 3 one-CPU processes of a run never fit on it."""
    write_sweep(tmp_path / "one.yaml", write_tiny_base(tmp_path), [{"model.activation": ["relu"]}], [0],
                devices_per_run=devices, launcher={"time": 30})
    before = tree(tmp_path)
    result = sweep("one.yaml", "--launcher", "slurm", *option, "--root", "runs", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stderr.splitlines() == [f"actsweep: error: {said}"], result.stderr
    assert tree(tmp_path) == before


def test_pending_reason_is_shown_once_and_max_pending_cancels_the_array(tmp_path):
    """Partition `closed` is down: the task pends (PartitionDown), the sweep says so once, and after
    --max-pending seconds cancels it and exits 1 with one line."""
    folder = one_run_sweep(tmp_path, partition="closed")
    result = sweep("one.yaml", "--launcher", "slurm", "--max-pending", "6", "--root", "runs", cwd=folder, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("      pending: 1 run for ") == 1, result.stdout
    assert "(PartitionDown: the partition is down; the tasks start once it is up)" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("actsweep: stopped waiting: 1 run pending with none running for ")
    assert "over --max-pending 6 (PartitionDown); cancelled 1 task of SLURM job array" in line
    job = json.loads((folder / "runs" / "tiny" / "slurm" / "jobs.json").read_text())[ONE_RUN]
    state = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job, "--format", "%T"],
                           capture_output=True, text=True).stdout.split()
    assert state in ([], ["CANCELLED"])


SLOW = '''
import time
from lightning.pytorch.callbacks import Callback

class Slow(Callback):
    """Slows the steps down (not their numbers) so that a signal lands mid-run."""
    def on_train_batch_end(self, *args):
        time.sleep(0.3)
'''


def test_preempted_task_requeues_and_resumes_exactly_and_a_bad_point_crashes(grid_sweep, folder):
    """USR2 after the first checkpoint: the fit saves last.ckpt at its step, submitit requeues the task,
    the requeued task resumes and ends with the uninterrupted run's train/loss, to the bit. In the same
    array, a point only its data can refute (a context longer than the corpus: every setting passes
    the sweep's checks) ends crashed, and the sweep's exit status says so."""
    (folder / "slow.py").write_text(SLOW)
    grid = [GRID[0] | {"model.activation": ["relu"], "model.norm": ["layernorm"]}, {"data.block_size": [1000000]}]
    write_sweep(folder / "preempt.yaml", folder / "tiny.yaml", grid, [0],
                fixed={"trainer.callbacks+": {"class_path": "slow.Slow"}}, launcher={"time": 30})
    env = task_env(folder)
    proc = subprocess.Popen([sys.executable, "-m", "actsweep.cli", "sweep", "preempt.yaml", "--launcher", "slurm",
                             "--root", "preempt", "--no-report"], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_dir = folder / "preempt" / "tiny" / REFERENCE
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():
            assert time.monotonic() < deadline and proc.poll() is None, "no first checkpoint"
            time.sleep(0.2)
        job = json.loads((folder / "preempt" / "tiny" / "slurm" / "jobs.json").read_text())[REFERENCE]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 1, out  # the crashed point
    assert read_status(folder / "preempt" / "tiny" / "block_size=1000000,seed=0")["status"] == "crashed"
    assert read_status(run_dir)["status"] == "finished", out
    fit_log = (run_dir / "fit.log").read_text()
    assert "SaveOnSignal: SIGUSR2 at step" in fit_log and fit_log.count("--ckpt_path") == 1
    task_log = next((folder / "preempt" / "tiny" / "slurm").glob(f"*/{job}_0_log.out")).read_text()
    assert "Requeued job" in task_log
    resumed, uninterrupted = read_scalars(run_dir)["train/loss"], read_scalars(grid_sweep[1] / REFERENCE)["train/loss"]
    assert list(resumed.index) == list(uninterrupted.index)
    assert resumed.to_list() == uninterrupted.to_list()



DDP_STEPS = {"trainer.max_steps": 20, "trainer.log_every_n_steps": 1}  # both DDP runs: checkpoint at 10, each step logged


def ddp_sweep(folder: Path, **extra) -> subprocess.CompletedProcess:
    """`ONE_RUN` as one array task of 2 SLURM tasks (devices_per_run 2 on CPU), in `folder/runs`."""
    write_sweep(folder / "ddp.yaml", write_tiny_base(folder), [{"model.activation": ["relu"]}], [0],
                devices_per_run=2, launcher={"time": 30}, fixed={**DDP_STEPS, **extra})
    return sweep("ddp.yaml", "--launcher", "slurm", "--root", "runs", "--no-report", cwd=folder, timeout=300)


def local_ddp_loss(folder: Path) -> list[float]:
    """train/loss of `ONE_RUN` fitted on this machine by Lightning's own 2-process DDP launcher (gloo)."""
    command = [sys.executable, "-m", "actsweep.cli", "fit", "--config", str(folder / "tiny.yaml"),
               "--model.activation", "relu", "--seed_everything", "0", "--threads", "1",
               *(arg for key, value in DDP_STEPS.items() for arg in (f"--{key}", str(value))),
               "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.logger.save_dir", str(folder / "local"),
               "--trainer.logger.name", "tiny", "--trainer.logger.version", "ref"]
    env = {k: v for k, v in task_env(folder).items() if not k.startswith("SLURM_")}
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return read_scalars(folder / "local" / "tiny" / "ref")["train/loss"].to_list()


@pytest.fixture(scope="module")
def spanned(tmp_path_factory) -> Path:
    """The uninterrupted 2-task run's folder."""
    folder = tmp_path_factory.mktemp("ddp")
    result = ddp_sweep(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_a_run_spans_two_srun_tasks_under_ddp_like_a_local_two_process_run(spanned):
    """devices_per_run 2 on CPU: one array task of 2 SLURM tasks, which srun starts and Lightning's
    SLURMEnvironment joins under gloo; its train/loss is the local 2-process DDP run's, to the bit
    (the same ranks draw the same windows and all-reduce the same gradients in the same order)."""
    run_dir = spanned / "runs" / "tiny" / ONE_RUN
    (script,) = (spanned / "runs" / "tiny" / "slurm").glob("*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()
    assert json.loads((run_dir / "run.json").read_text())["processes"] == 2
    assert (run_dir / "fit.rank1.log").is_file() and read_status(run_dir)["status"] == "finished"
    losses = read_scalars(run_dir)["train/loss"]
    assert list(losses.index) == list(range(DDP_STEPS["trainer.max_steps"]))
    assert losses.to_list() == local_ddp_loss(spanned)


SLOWED = {"trainer.callbacks+": {"class_path": "slow.Slow"}}


def start_slow_ddp_sweep(pool: ThreadPoolExecutor, folder: Path):
    """The 2-task sweep with slowed steps, once its first checkpoint is written: (its future, run folder)."""
    (folder / "slow.py").write_text(SLOW)
    run_dir = folder / "runs" / "tiny" / ONE_RUN
    result = pool.submit(ddp_sweep, folder, **SLOWED)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert time.monotonic() < deadline and not result.done(), "no first checkpoint"
        time.sleep(0.2)
    return result, run_dir


def rank_fit(run_dir: Path, rank: int) -> int:
    """The process id of the fit of SLURM task `rank` training `run_dir` (the node is this machine)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"actsweep.cli\0fit" in cmdline and run_dir.name.encode() in cmdline and f"SLURM_PROCID={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no fit of rank {rank} running")


def test_a_signal_to_one_rank_stops_all_at_one_step_and_a_rerun_resumes_exactly(spanned, tmp_path):
    """USR2 to rank 1's fit alone: the ranks agree, save one step together and end interrupted
    (without the agreement rank 1 would wait alone in the checkpoint's barrier); rerunning the
    sweep resumes both ranks to the uninterrupted run's train/loss, to the bit."""
    with ThreadPoolExecutor(1) as pool:
        result, run_dir = start_slow_ddp_sweep(pool, tmp_path)
        os.kill(rank_fit(run_dir, 1), signal.SIGUSR2)
        assert result.result().returncode == 1 and read_status(run_dir)["status"] == "interrupted"
    rerun = ddp_sweep(tmp_path, **SLOWED)
    assert rerun.returncode == 0 and read_status(run_dir)["status"] == "finished", rerun.stdout + rerun.stderr
    resumed = read_scalars(run_dir)["train/loss"]
    uninterrupted = read_scalars(spanned / "runs" / "tiny" / ONE_RUN)["train/loss"]
    assert list(resumed.index) == list(uninterrupted.index) and resumed.to_list() == uninterrupted.to_list()


def test_a_spanning_run_preempted_requeues_and_resumes_exactly(spanned, tmp_path):
    """USR2 to both tasks after the first checkpoint: the ranks agree on a step, save it, submitit
    requeues the array task, and its 2 tasks resume to the uninterrupted run's train/loss, to the bit."""
    with ThreadPoolExecutor(1) as pool:
        result, run_dir = start_slow_ddp_sweep(pool, tmp_path)
        job = json.loads((tmp_path / "runs" / "tiny" / "slurm" / "jobs.json").read_text())[ONE_RUN]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        out = result.result()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SaveOnSignal: SIGUSR2 at step" in (run_dir / "fit.log").read_text()
    for log in ("fit.log", "fit.rank1.log"):  # both ranks resumed, once
        assert (run_dir / log).read_text().count("--ckpt_path") == 1
    assert "Requeued job" in next((tmp_path / "runs" / "tiny" / "slurm").glob(f"*/{job}_0_log.out")).read_text()
    assert read_status(run_dir)["status"] == "finished"
    resumed = read_scalars(run_dir)["train/loss"]
    uninterrupted = read_scalars(spanned / "runs" / "tiny" / ONE_RUN)["train/loss"]
    assert list(resumed.index) == list(uninterrupted.index) and resumed.to_list() == uninterrupted.to_list()
