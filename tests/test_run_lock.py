"""One process per run folder: the `flock` in the run folder, two real sweeps racing, a killed sweep's fits,
and run.json written by the fit itself (a `--dry-run` command pasted by hand is grouped like the rest)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actsweep.io import RunBusy, lock_run
from actsweep.status import read_status
from actsweep.study import report
from actsweep.study.logs import event_files
from helpers import fit_error, snapshot, write_config, write_sweep, write_tiny_base

REPO = Path(__file__).resolve().parents[1]
SLOW = '''
import time
from lightning.pytorch.callbacks import Callback

class Slow(Callback):
    """Slows the steps down (not their numbers), so that other processes meet a run mid-fit."""
    def on_train_batch_end(self, *args):
        time.sleep(1.0)
'''


def test_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from actsweep.io import lock_run; "
                               f"lock_run({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunBusy, match=f"in use by process {holder.pid}"):
        lock_run(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    os.close(lock_run(tmp_path))  # the kernel released it with the dead process


def test_a_fit_into_a_held_run_folder_is_refused_in_one_line_before_lightning_starts(tmp_path, capsys):
    """By hand, into a run a sweep is training: one line, exit 2, before Lightning prints or builds."""
    config = write_config(tmp_path)
    run = tmp_path / "logs" / "tiny" / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from actsweep.io import lock_run; "
                               f"lock_run({str(run)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == "held\n"
        before = snapshot(tmp_path)
        error = fit_error(["fit", "--config", str(config), "--trainer.logger.version", "busy"], capsys)
        assert f"run folder {run} is in use by process {holder.pid}" in error
        assert snapshot(tmp_path) == before  # no token cache, no log folder
    finally:
        holder.kill()
        holder.wait()


def start_sweep(folder: Path, sweep_file: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{folder}:{REPO}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "actsweep.cli", "sweep", str(sweep_file), "--root", str(folder / "runs"),
                             "--no-report", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def slow_sweep(tmp_path: Path, seeds=(0, 1)) -> Path:
    (tmp_path / "slow.py").write_text(SLOW)
    return write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), [{"model.activation": ["relu"]}], list(seeds),
                       fixed={"trainer.max_steps": 12, "trainer.callbacks+": {"class_path": "slow.Slow"}})


def running(run_dir: Path) -> bool:
    return (read_status(run_dir) or {}).get("status") == "running"


@pytest.mark.slow
def test_two_sweeps_never_train_the_same_run(tmp_path):
    """The second sweep starts while the first trains seed 0. Whichever way they meet (the second finds
    seed 0 in use, or takes seed 1 first and the first sweep then finds it in use), each run is trained
    once, by one process, and finishes; a sweep that met a run in use says so and exits 1."""
    sweep_file = slow_sweep(tmp_path)
    runs = tmp_path / "runs" / "tiny"
    first = start_sweep(tmp_path, sweep_file)
    wait_for(lambda: running(runs / "activation=relu,seed=0"), "the first sweep's fit")
    second = start_sweep(tmp_path, sweep_file)
    outputs = [first.communicate(timeout=600)[0], second.communicate(timeout=600)[0]]
    met = [out for out in outputs if "in use by process" in out]
    assert met, outputs
    assert all(code == 1 for code, out in zip((first.returncode, second.returncode), outputs) if out in met)
    for seed in (0, 1):
        run_dir = runs / f"activation=relu,seed={seed}"
        assert read_status(run_dir)["status"] == "finished"
        trainings = [f for f in event_files(run_dir) if f.suffix != ".hparams"]  # one per process start
        assert (run_dir / "fit.log").read_text().count("$ ") == 1 and len(trainings) == 1


def child_pids(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_fits_die_with_their_sweep(tmp_path, signum):
    sweep_file = slow_sweep(tmp_path, seeds=[0])
    run_dir = tmp_path / "runs" / "tiny" / "activation=relu,seed=0"
    sweep = start_sweep(tmp_path, sweep_file)
    wait_for(lambda: running(run_dir), "the fit")
    (fit,) = child_pids(sweep.pid)
    sweep.send_signal(signum)
    sweep.wait()
    wait_for(lambda: not alive(fit), "the orphaned fit to die", timeout=60)
    os.close(lock_run(run_dir))  # nobody holds the run: a rerun can resume it


def test_pasted_dry_run_command_writes_run_json_and_report_groups_it(tmp_path):
    """A run started by hand from `--dry-run` carries its sweep metadata; a run folder without run.json
    (started by hand before it existed) is grouped by its name, and a rerun of the sweep writes its run.json."""
    sweep_file = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), [{"model.activation": ["relu"]}], [0, 1],
                             fixed={"trainer.max_steps": 4, "trainer.val_check_interval": 2})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    dry = subprocess.run([sys.executable, "-m", "actsweep.cli", "sweep", str(sweep_file), "--root", str(tmp_path / "runs"),
                          "--dry-run"], env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    for line in dry:
        subprocess.run([sys.executable, "-m", "actsweep.cli", *shlex.split(line)[1:]], env=env, check=True,
                       capture_output=True)
    runs = tmp_path / "runs" / "tiny"
    assert json.loads((runs / "activation=relu,seed=1" / "run.json").read_text())["config"] == "activation=relu"
    (runs / "activation=relu,seed=1" / "run.json").unlink()  # as if started before run.json existed
    table = report.load_runs(runs)
    assert list(table["config"]) == ["activation=relu", "activation=relu"] and sorted(table["seed"]) == [0, 1]
    summary = report.summarize(table, report.read_runs(runs))
    assert len(summary) == 1 and summary.iloc[0]["n"] == 2
    from actsweep.study.runner import main

    assert main([str(sweep_file), "--root", str(tmp_path / "runs"), "--no-report"]) == 0  # nothing to run
    assert json.loads((runs / "activation=relu,seed=1" / "run.json").read_text())["seed"] == 1
