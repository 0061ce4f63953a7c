"""How a sweep shares a node: each job its own CPUs and accelerators, threads fixed by the run, and
a sweep that does not fit refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from actsweep import resources
from actsweep.errors import ConfigError
from actsweep.study import launchers, plan, runner, sweep as sw
from helpers import recording_launcher, write_sweep, write_tiny_base


def test_slots_are_disjoint_and_sized() -> None:
    slots = resources.plan_slots(2, 3, 2, cpus=[0, 1, 2, 3, 4, 5, 6], devices=["0", "1", "2", "3"])
    assert [s.cpus for s in slots] == [(0, 1, 2), (3, 4, 5)]
    assert [s.devices for s in slots] == [("0", "1"), ("2", "3")]
    assert slots[1].env() == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert resources.plan_slots(1, 1, 0, [5], [])[0].env() == {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("jobs, threads, per_run, message", [
    (3, 1, 2, r"3 jobs × 2 devices per run, 1 run\(s\) per device, need 6 accelerators; 4 are visible"),
    (4, 2, 0, r"4 jobs × 2 threads need 8 CPUs; this process may use 7"),
    (0, 1, 0, r"jobs, threads and runs_per_device must be >= 1"),
])
def test_slots_that_do_not_fit_are_refused(jobs, threads, per_run, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resources.plan_slots(jobs, threads, per_run, cpus=list(range(7)), devices=["0", "1", "2", "3"])


@pytest.mark.parametrize("devices", [[], ["0"]])
def test_devices_per_run_beyond_the_visible_ones_says_to_leave_it_out(devices) -> None:
    """On a laptop without CUDA a sweep file's `devices_per_run: 1` is refused with what to do, not
    with a --runs-per-device that cannot help."""
    with pytest.raises(ConfigError, match=rf"devices_per_run {len(devices) + 1} needs {len(devices) + 1} accelerator\(s\) "
                                          rf"a run; {len(devices)} are visible; leave devices_per_run out"):
        resources.plan_slots(1, 1, len(devices) + 1, cpus=[0, 1], devices=devices, runs_per_device=4)


def test_usable_cpus_follow_affinity_and_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 2, 9})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert resources.usable_cpus() == [2, 4, 9]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert resources.usable_cpus() == [2, 4]


def test_visible_accelerators_read_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert resources.visible_accelerators() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resources.visible_accelerators() == []


def test_each_job_gets_its_own_devices_and_cpus_on_a_four_gpu_host(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(launchers, "visible_accelerators", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(launchers, "usable_cpus", lambda: [0, 1, 2, 3])
    path = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), devices_per_run=2, threads=2)
    sweep = sw.load_sweep(path)
    seen: list = []
    launchers.run_local(sweep, tmp_path / "root", sweep.runs(), jobs=2, launch=recording_launcher(seen, threading.Lock()))
    assert len(seen) == len(sweep.runs())
    for command, env in seen:
        assert command[command.index("--threads") + 1] == "2" and env["OMP_NUM_THREADS"] == "2"
        assert (env["CUDA_VISIBLE_DEVICES"], env[plan.PIN_VARIABLE]) in {("0,1", "0,1"), ("2,3", "2,3")}
    recorded = [json.loads((tmp_path / "root" / "tiny" / r.name / "run.json").read_text()) for r in sweep.runs()]
    assert all(len(r["devices"]) == 2 and r["threads"] == 2 for r in recorded)


def test_a_sweep_that_does_not_fit_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(launchers, "visible_accelerators", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(launchers, "usable_cpus", lambda: list(range(8)))
    path = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), devices_per_run=2)
    assert runner.main([str(path), "--root", str(tmp_path / "root"), "--jobs", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need 6 accelerators; 4 are visible" in err[0]
    assert not (tmp_path / "root").exists()


def test_the_child_is_pinned_to_its_slot(tmp_path) -> None:
    env = {**os.environ, plan.PIN_VARIABLE: "0"}
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    (tmp_path / "checkpoints").mkdir()
    assert plan.launch_fit([os.sys.executable, "-c", code], tmp_path, env) == 0
    assert (tmp_path / "fit.log").read_text().splitlines()[-1] == "[0]"


LAUNCH_FROM_A_THREAD = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from actsweep.study import plan
folder = Path(sys.argv[1])
child = f"import os, time; open({str(folder / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(120)"
with ThreadPoolExecutor(1) as pool:  # as the local launcher starts fits: from a pool thread
    pool.submit(plan.launch_fit, [sys.executable, "-c", child], folder, dict(os.environ)).result()
"""


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_fit_dies_with_the_sweep_that_started_it(tmp_path) -> None:
    """The sweep is SIGKILLed (no cleanup) while its fit runs: the fit gets SIGTERM and is gone within
    seconds, not left training under PID 1."""
    repo = Path(__file__).resolve().parents[1]
    sweep = subprocess.Popen([sys.executable, "-c", LAUNCH_FROM_A_THREAD, str(tmp_path)],
                             env={**os.environ, "PYTHONPATH": str(repo)})
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text():
        assert time.monotonic() < deadline and sweep.poll() is None, "the fit never started"
        time.sleep(0.05)
    fit = int((tmp_path / "pid").read_text())
    assert alive(fit)
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 10
    while alive(fit):
        assert time.monotonic() < deadline, "the fit outlived the sweep that started it"
        time.sleep(0.05)


@pytest.mark.parametrize("global_batch, batch, processes, accumulation", [(512, 128, 1, 4), (512, 128, 4, 1), (512, 64, 2, 4)])
def test_accumulation_keeps_a_named_global_batch(global_batch, batch, processes, accumulation) -> None:
    from actsweep.train.cli import accumulation_for

    assert accumulation_for(global_batch, batch, processes) == accumulation


def test_a_global_batch_that_does_not_divide_is_refused() -> None:
    from actsweep.train.cli import accumulation_for

    with pytest.raises(ConfigError, match=r"global_batch_size 512 is not a whole multiple of data.batch_size × processes = 128 × 3"):
        accumulation_for(512, 128, 3)


def test_a_fit_records_its_effective_global_batch(tmp_path) -> None:
    from helpers import write_config
    from actsweep.study.logs import read_scalars
    from actsweep import cli

    config = write_config(tmp_path)
    cli.main(["fit", "--config", str(config), "--trainer.max_steps", "2", "--global_batch_size", "16"])
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    scalars = read_scalars(run)
    assert scalars["batch/global_size"][0] == 16 and scalars["batch/processes"][0] == 1  # 8 × 1 process × 2
    assert "global_batch_size: 16" in (run / "config.yaml").read_text()
