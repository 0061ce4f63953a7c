"""Runs per device (issue 28): K local jobs share each device, each still on CPUs of its own; refused
where it cannot hold; recorded in run.json and the report; and the numbers do not depend on K."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest

from actsweep import resources
from actsweep.errors import ConfigError
from actsweep.study import launchers, runner, sweep as sw
from actsweep.study.records import stale_runs
from helpers import recording_launcher, snapshot, write_sweep, write_tiny_base

FOUR = ["0", "1", "2", "3"]


@pytest.mark.parametrize("jobs, per_run, runs_per_device, devices, table", [
    # jobs ≤ devices: the same places as one run per device
    (2, 1, 2, FOUR, [((0,), ("0",)), ((1,), ("1",))]),
    # round-robin: every device takes a job before any takes a second
    (4, 1, 2, ["0", "1"], [((0,), ("0",)), ((1,), ("1",)), ((2,), ("0",)), ((3,), ("1",))]),
    (3, 1, 3, ["7"], [((0,), ("7",)), ((1,), ("7",)), ((2,), ("7",))]),
    # groups of devices_per_run are shared whole
    (3, 2, 2, FOUR, [((0,), ("0", "1")), ((1,), ("2", "3")), ((2,), ("0", "1"))]),
    # no accelerator: runs_per_device limits nothing
    (2, 0, 2, [], [((0,), ()), ((1,), ())]),
])
def test_slots_by_hand(jobs, per_run, runs_per_device, devices, table) -> None:
    slots = resources.plan_slots(jobs, 1, per_run, list(range(4)), devices, runs_per_device)
    assert [(s.cpus, s.devices) for s in slots] == table


def test_more_jobs_than_device_slots_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"5 jobs × 1 devices per run, 2 run\(s\) per device, need 3 "
                                                    r"accelerators; 2 are visible"):
        resources.plan_slots(5, 1, 1, list(range(8)), ["0", "1"], 2)


@pytest.fixture
def two_devices(monkeypatch):
    """Two faked accelerators and eight CPUs, whatever this machine has."""
    monkeypatch.setattr(launchers, "visible_accelerators", lambda: ["0", "1"])
    monkeypatch.setattr(launchers, "usable_cpus", lambda: list(range(8)))


@pytest.mark.parametrize("file_value, args, message", [
    (None, ["--runs-per-device", "0"], "--runs-per-device is a whole number >= 1, got 0"),
    (-1, [], "'runs_per_device' is a whole number >= 1, got -1"),
    (1.5, [], "'runs_per_device' is a whole number >= 1, got 1.5"),
    (True, [], "'runs_per_device' is a whole number >= 1, got True"),
    (None, ["--runs-per-device", "two"], "argument --runs-per-device: invalid int value: 'two'"),
    (2, ["--jobs", "5"], "5 jobs × 1 devices per run, 2 run(s) per device, need 3 accelerators; 2 are visible"),
    (None, ["--jobs", "3"], "3 jobs × 1 devices per run, 1 run(s) per device, need 3 accelerators; 2 are visible"),
    (2, ["--launcher", "slurm", "--dry-run"], "with --launcher slurm give --runs-per-device 1"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys, two_devices, file_value, args, message) -> None:
    extra = {} if file_value is None else {"runs_per_device": file_value}
    path = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), **extra)
    before = snapshot(tmp_path)
    assert runner.main([str(path), "--root", str(tmp_path / "root"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("actsweep: error: ") and message in err[0], err
    assert snapshot(tmp_path) == before


def test_k_jobs_share_a_device_each_on_its_own_cpus_and_k_is_recorded(tmp_path, two_devices) -> None:
    path = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), runs_per_device=2)
    sweep, root, seen = sw.load_sweep(path), tmp_path / "root", []
    launchers.run_local(sweep, root, sweep.runs(), jobs=4, launch=recording_launcher(seen, threading.Lock()))
    places = {(env["CUDA_VISIBLE_DEVICES"], env["ACTSWEEP_CPUS"]) for _, env in seen}
    assert len(seen) == 6 and places <= {("0", "0"), ("1", "1"), ("0", "2"), ("1", "3")}
    recorded = [json.loads((root / "tiny" / run.name / "run.json").read_text()) for run in sweep.runs()]
    assert all(r["runs_per_device"] == 2 and r["devices"] in (["0"], ["1"]) for r in recorded)
    assert stale_runs(sw.load_sweep(write_sweep(path, sweep.base)), root) == {}  # K=1 now: nothing stale


def test_results_do_not_depend_on_runs_per_device(tmp_path, capsys, monkeypatch) -> None:
    """One faked device: two runs one after the other (K = 1), then side by side on it (K = 2)."""
    monkeypatch.setattr(launchers, "visible_accelerators", lambda: ["0"])
    monkeypatch.setattr(launchers, "usable_cpus", lambda: [0, 1])
    path = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), [{"model.activation": ["relu", "gelu"]}], [0],
                       fixed={"trainer.max_steps": 10, "trainer.val_check_interval": 5}, runs_per_device=2)
    one, two = tmp_path / "one", tmp_path / "two"
    assert runner.main([str(path), "--root", str(one), "--runs-per-device", "1"]) == 0  # the flag wins
    assert runner.main([str(path), "--root", str(two), "--jobs", "2"]) == 0
    tables = [pd.read_csv(root / "tiny" / "results.csv").set_index("run").sort_index() for root in (one, two)]
    assert tables[0]["val_loss"].notna().all()
    same = [c for c in tables[0].columns if c != "tokens_per_sec"]  # the only column that may differ: a time
    pd.testing.assert_frame_equal(tables[0][same], tables[1][same], check_exact=True)
    for root, k in ((one, 1), (two, 2)):
        assert f"Placement: runs_per_device {k} on devices 0," in (root / "tiny" / "report.md").read_text()
        assert {json.loads(p.read_text())["runs_per_device"] for p in root.glob("tiny/*/run.json")} == {k}
    capsys.readouterr()
    assert runner.main([str(path), "--root", str(one), "--dry-run"]) == 0  # K = 2 now: done, not stale
    assert capsys.readouterr().out == ""
