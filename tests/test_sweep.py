"""The sweep runner: grid expansion and names, skip / resume / restart, divergence, file errors.

`finished_sweep` (conftest) trains a tiny sweep once per session; the report and notebook tests
reuse it.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from actsweep.errors import ActSweepError
from actsweep.study import launchers, plan, runner, sweep as sw
from actsweep.status import read_status, settle, write_status
from actsweep.study.logs import read_scalars
from helpers import fake_launcher, write_sweep, write_tiny_base

def test_grid_expansion_and_names(tmp_path):
    base = write_tiny_base(tmp_path)
    grid = [{"model.lr": ["1e-3", 3e-3], "model.activation": ["relu", "gelu"], "model.norm": ["layernorm", "none"]},
            {"model.activation": ["learnable_leaky_relu"], "model.slope_scope": ["global", "layer"]}]
    sweep = sw.load_sweep(write_sweep(tmp_path / "s.yaml", base, grid, seeds=[0, 1],
                                      labels={"SM+G": {"model.norm": "none", "model.activation": "gelu"}}))
    runs = sweep.runs()
    assert len(runs) == (2 * 2 * 2 + 2) * 2
    assert len({r.name for r in runs}) == len(runs)
    assert [r.name for r in runs] == [r.name for r in sw.load_sweep(tmp_path / "s.yaml").runs()]  # stable
    assert runs[0].name == "lr=1e-3,activation=relu,norm=layernorm,seed=0"
    assert runs[-1].name == "activation=learnable_leaky_relu,slope_scope=layer,seed=1"
    assert runs[0].overrides == {"model.lr": 1e-3, "model.activation": "relu", "model.norm": "layernorm"}
    assert {r.label for r in runs if r.overrides.get("model.norm") == "none" and r.overrides["model.activation"] == "gelu"} == {"SM+G"}
    command = plan.fit_command(sweep, runs[0], tmp_path / "root")
    assert command[command.index("--model.lr") + 1] == "0.001"
    assert command[command.index("--seed_everything") + 1] == "0"
    assert command[command.index("--trainer.logger.version") + 1] == runs[0].name
    assert "--ckpt_path" not in command


def test_a_grid_part_may_name_its_own_seeds(tmp_path):
    base = write_tiny_base(tmp_path)
    grid = [{"model.activation": ["relu", "gelu"], "model.norm": ["layernorm"]},
            {"model.activation": ["relu", "gelu"], "model.norm": ["none"], "seeds": [0, 1, 2, 7]}]
    sweep = sw.load_sweep(write_sweep(tmp_path / "s.yaml", base, grid, seeds=[0, 1]))
    by_norm = {norm: sorted({(r.overrides["model.activation"], r.seed) for r in sweep.runs()
                             if r.overrides["model.norm"] == norm}) for norm in ("layernorm", "none")}
    assert by_norm["layernorm"] == [(a, s) for a in ("gelu", "relu") for s in (0, 1)]
    assert by_norm["none"] == [(a, s) for a in ("gelu", "relu") for s in (0, 1, 2, 7)]
    assert "seeds" not in sw.grid_values(sweep.grid)  # the part's seeds are no grid key
    assert "activation=relu,norm=none,seed=7" in {r.name for r in sweep.runs()}
    for bad in ([], [0, "1"], 3):
        grid[1]["seeds"] = bad
        with pytest.raises(sw.SweepError, match="a grid part's 'seeds' is a non-empty list of integers"):
            sw.load_sweep(write_sweep(tmp_path / "s.yaml", base, grid, seeds=[0, 1]))


@pytest.mark.parametrize("value, text", [(1e-3, "1e-3"), (3e-4, "3e-4"), (0.5, "0.5"), (1e6, "1e6"), (128, "128"),
                                         (["relu", "gelu"], "relu-gelu"), (True, "true"), ("a/b c", "a_b_c")])
def test_short_values_are_filesystem_safe(value, text):
    assert sw.short(value) == text


def test_plan_skips_finished_resumes_interrupted_restarts_crashed(tmp_path):
    sweep = sw.load_sweep(write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), [{"model.activation": ["relu", "gelu", "gelu_tanh", "leaky_relu"]}], [0]))
    root = tmp_path / "root"
    dirs = {r.overrides["model.activation"]: root / "tiny" / r.name for r in sweep.runs()}
    write_status(dirs["relu"], "finished", 30)
    write_status(dirs["gelu"], "running", 20)  # killed: no final word, but a checkpoint
    (dirs["gelu"] / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, dirs["gelu"] / "checkpoints" / "last.ckpt")
    write_status(dirs["gelu_tanh"], "crashed", 3, "boom")  # no checkpoint: start again, clean
    (dirs["gelu_tanh"] / "events.out.tfevents.stale").write_bytes(b"")
    calls: list = []
    results = launchers.run_local(sweep, root, sweep.runs(), jobs=2, launch=fake_launcher(calls))
    launched = {c[c.index("--model.activation") + 1]: c for c in calls}
    assert set(launched) == {"gelu", "gelu_tanh", "leaky_relu"}
    assert launched["gelu"][launched["gelu"].index("--ckpt_path") + 1] == str(dirs["gelu"] / "checkpoints" / "last.ckpt")
    assert "--ckpt_path" not in launched["gelu_tanh"] and "--ckpt_path" not in launched["leaky_relu"]
    assert not (dirs["gelu_tanh"] / "events.out.tfevents.stale").exists()
    assert {s["status"] for s in results.values()} == {"finished"}
    calls.clear()
    launchers.run_local(sweep, root, sweep.runs(), jobs=2, launch=fake_launcher(calls))
    assert calls == []  # everything finished: a rerun launches nothing


def test_dead_process_without_final_status_is_interrupted_or_crashed(tmp_path):
    write_status(tmp_path, "running", 12)
    assert settle(tmp_path, -9)["status"] == "interrupted"
    write_status(tmp_path, "running", 12)
    crashed = settle(tmp_path, 1, "see fit.log")
    assert crashed["status"] == "crashed" and "exit code 1" in crashed["reason"] and crashed["step"] == 12
    assert read_status(tmp_path)["status"] == "crashed"


def test_finished_sweep_is_skipped(finished_sweep, capsys):
    sweep_file = finished_sweep.parent.parent / "sweep.yaml"
    calls: list = []
    sweep = sw.load_sweep(sweep_file)
    todo, results = runner.pending(sweep, finished_sweep.parent)
    launchers.run_local(sweep, finished_sweep.parent, todo, jobs=2, launch=fake_launcher(calls))
    assert calls == [] and len(results) == 6
    runner.main([str(sweep_file), "--root", str(finished_sweep.parent), "--dry-run"])
    assert capsys.readouterr().out == ""  # nothing left to run


def test_a_comparison_added_to_a_finished_sweep_is_reported_without_rerunning(finished_sweep, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished_sweep, root / finished_sweep.name)
    spec = yaml.safe_load((finished_sweep.parent.parent / "sweep.yaml").read_text())
    spec["comparisons"] = [{"key": "model.activation", "a": "gelu", "b": "relu", "metric": "train_loss"}]
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    before = {p: p.stat().st_mtime_ns for p in root.rglob("status.json")}
    assert runner.main([str(sweep_file), "--root", str(root)]) == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("status.json")} == before  # nothing ran again
    paired = pd.read_csv(root / finished_sweep.name / "paired.csv")
    assert set(paired.metric) == {"train_loss"} and set(paired.comparison) == {"gelu − relu"}


def test_diverged_run_is_recorded_and_others_finish(finished_sweep):
    statuses = {p.name: read_status(p)["status"] for p in finished_sweep.iterdir() if p.is_dir()}
    assert statuses == {
        "activation=relu,seed=0": "finished", "activation=relu,seed=1": "finished",
        "activation=gelu,seed=0": "finished", "activation=gelu,seed=1": "finished",
        "activation=relu,lr=1e6,seed=0": "diverged", "activation=relu,lr=1e6,seed=1": "diverged",
    }
    report = (finished_sweep / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| relu | 1e6 |"))
    assert "Diverged (2/2)" in row
    # Each finished run is in TensorBoard's HParams view: its own event file with the grid values.
    assert len(list((finished_sweep / "activation=gelu,seed=1").glob("*.hparams"))) == 1


def test_killed_run_resumes_to_the_same_result(finished_sweep, tmp_path, monkeypatch):
    from faults import signal_once

    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).resolve().parent}:{Path(__file__).resolve().parents[1]}")
    base = finished_sweep.parent.parent / "tiny.yaml"
    grid, root = [{"model.activation": ["relu"]}], tmp_path / "root"
    killed = write_sweep(tmp_path / "killed.yaml", base, grid, [0], fixed=signal_once(tmp_path / "killed", [25]))
    assert runner.main([str(killed), "--root", str(root), "--no-report"]) == 1
    run_dir = root / "tiny" / "activation=relu,seed=0"
    assert read_status(run_dir)["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert runner.main([str(killed), "--root", str(root), "--no-report"]) == 0  # the same command resumes
    assert "--ckpt_path" in (run_dir / "fit.log").read_text()
    assert len(read_scalars(run_dir)["val/loss"]) == 3  # steps 10, 20 (logged twice, merged), 30
    resumed, uninterrupted = read_scalars(run_dir), read_scalars(finished_sweep / "activation=relu,seed=0")
    for tag in ("val/loss", "train/loss"):
        assert list(resumed[tag].index) == list(uninterrupted[tag].index)
        assert resumed[tag].to_numpy() == pytest.approx(uninterrupted[tag].to_numpy(), abs=1e-6)


@pytest.mark.parametrize("spec, message", [
    ({"name": "x", "base": "b.yaml", "grid": {"model.lr": [1]}, "seeds": [0], "sweeps": 3},
     "unknown key 'sweeps'; allowed keys: name, base, grid, seeds, fixed, study, labels, threads, devices_per_run, runs_per_device, comparisons, launcher"),
    ({"name": "x", "base": "b.yaml", "grid": {}, "seeds": [0]}, "'grid' is missing or empty"),
    ({"name": "x", "base": "b.yaml", "grid": {"model.lr": []}, "seeds": [0]}, "non-empty lists"),
    ({"name": "x", "base": "b.yaml", "grid": {"model.lr": [1]}, "seeds": []}, "'seeds' is missing or empty"),
    ({"name": "x", "base": "b.yaml", "grid": {"model.lr": [1]}, "seeds": [0], "study": "x"}, "unknown 'study'"),
])
def test_bad_sweep_file_fails_before_running(tmp_path, monkeypatch, capsys, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.yaml").write_text("{}")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    assert runner.main(["bad.yaml", "--root", "runs"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_one_runnable_command_per_run(tmp_path, capsys):
    sweep_file = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path))
    assert runner.main([str(sweep_file), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(shlex.split(line)[:2] == ["actsweep", "fit"] for line in lines)
    assert not (tmp_path / "runs").exists()


def test_cli_dispatches_sweep(tmp_path, capsys):
    from actsweep.cli import main

    (tmp_path / "bad.yaml").write_text("name: x\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(tmp_path / "bad.yaml")])
    assert exit_info.value.code == 2 and "'base' is missing or empty" in capsys.readouterr().err


def test_numbers_do_not_depend_on_jobs(finished_sweep, tmp_path):
    """The shared sweep ran with --jobs 2; the same sweep with --jobs 1 logs bit-identical numbers."""
    import pandas as pd

    sweep_file = finished_sweep.parent.parent / "sweep.yaml"
    assert runner.main([str(sweep_file), "--root", str(tmp_path / "one"), "--jobs", "1"]) == 0
    two = pd.read_csv(finished_sweep / "results.csv").set_index("run").sort_index()
    one = pd.read_csv(tmp_path / "one" / "tiny" / "results.csv").set_index("run").sort_index()
    numbers = [c for c in two.columns if pd.api.types.is_float_dtype(two[c]) and c != "tokens_per_sec"]
    assert "val_loss" in numbers and "grad_norm" in numbers
    pd.testing.assert_frame_equal(one[numbers], two[numbers], check_exact=True)


def test_slurm_dry_run_shows_the_array_with_file_settings_and_overrides(tmp_path, capsys, monkeypatch):
    sweep_file = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), threads=2,
                             launcher={"partition": "gpu", "time": 120, "mem": "8G", "sbatch": {"constraint": "a100"}})
    args = [str(sweep_file), "--root", str(tmp_path / "runs"), "--launcher", "slurm", "--dry-run"]
    args_overrides = ["--time", "30", "--parallel", "2", "--sbatch", "exclude=node3", "--cpus", "4"]
    assert runner.main(args + args_overrides) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "would submit 6 runs as one SLURM job array" in lines[0]
    shown = lines[1].split()[2:]
    assert shown == ["--partition=gpu", "--time=30", "--cpus-per-task=4", "--mem=8G",
                     "--array=0-5%2", "--signal=USR2@90", "--constraint=a100", "--exclude=node3"]
    assert len(lines) == 2 + 6 and all(shlex.split(line)[:2] == ["actsweep", "fit"] for line in lines[2:])
    assert not (tmp_path / "runs").exists()
    # What is submitted: the script submitit hands sbatch (a stand-in that keeps it, then refuses) has each
    # option. submitit wants an srun on the PATH too; it is never called.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho refused >&2\nexit 1'), ("srun", "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from actsweep.study import slurm
    monkeypatch.setattr(slurm, "partition_refusal", lambda *args: None)  # a real cluster (CI's) has no "gpu" partition
    with pytest.raises(ActSweepError, match="SLURM refused the job array: refused"):
        runner.main([arg for arg in args if arg != "--dry-run"] + args_overrides)
    script = (tmp_path / "submitted.sh").read_text().splitlines()
    submitted = [line.removeprefix("#SBATCH ") for line in script if line.startswith("#SBATCH ")]
    assert set(shown) <= set(submitted), sorted(set(shown) - set(submitted))


@pytest.mark.parametrize("launcher, args, message", [
    ({"partiton": "gpu"}, [], "unknown launcher setting 'partiton'; allowed: partition, time"),
    ({"mem": "lots"}, [], "launcher setting 'mem' is a size like 8G"),
    ({}, ["--time", "0"], "launcher setting 'time' is a whole number ≥ 1, got 0"),
    ({}, ["--sbatch", "constraint"], "--sbatch takes KEY=VALUE"),
    ({"max_pending": 0}, [], "launcher setting 'max_pending' is a whole number ≥ 1, got 0"),
    ({}, ["--max-pending", "soon"], "argument --max-pending: invalid int value: 'soon'"),
])
def test_bad_launcher_settings_fail_before_anything(tmp_path, capsys, launcher, args, message):
    sweep_file = write_sweep(tmp_path / "s.yaml", write_tiny_base(tmp_path), launcher=launcher)
    assert runner.main([str(sweep_file), "--root", str(tmp_path / "runs"), "--launcher", "slurm", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()


def test_the_readmes_sweep_file_example_runs_on_a_machine_without_cuda(tmp_path, monkeypatch):
    """The example under "Sweeps and reports", as a newcomer copies it: it loads, and `--jobs 2`
    places its runs on a 2-CPU machine without CUDA (it once set devices_per_run: 1, refused there)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("A sweep file names a base config")[1].split("```yaml\n")[1].split("```")[0]
    (tmp_path / "example.yaml").write_text(example)
    sweep = sw.load_sweep(tmp_path / "example.yaml")
    assert sweep.name == "quickstart" and len(sweep.runs()) == 8
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(launchers, "usable_cpus", lambda: [0, 1])
    assert [slot.devices for slot in launchers.slots_for(sweep, 2)] == [(), ()]
