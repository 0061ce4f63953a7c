"""Finished work is never touched and a result is never misreported (issue 26): real signals inside
real fits, damaged event files and checkpoints, failed writes, odd records, hidden config changes.
Each test builds its own small corpus."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO
import yaml
import pytest

from actsweep import cli as actsweep_cli
from actsweep.errors import ConfigError
from actsweep.io import checksum_path, lock_run, sha256_file
from actsweep.status import read_status, settle, write_status
from actsweep.study import launchers, plan, runner, sweep as sw
from actsweep.study.logs import event_files, events_problem, read_runs, read_scalars
from actsweep.study.report import write_report
from actsweep.train import cli
from actsweep.train.checkpoints import ChecksummedCheckpointIO, ValidatedCheckpoint, checkpoint_problem
from faults import signal_once
from helpers import (fake_launcher, finished_fit, fit_error, run_main, snapshot, work_error, tiny_modules, tiny_trainer,
                     write_config, write_sweep, write_tiny_base)

TESTS = Path(__file__).resolve().parent
RELU = "activation=relu,seed=0"
ONE_RUN = [{"model.activation": ["relu"]}]


@pytest.fixture
def child_imports_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}:{TESTS.parent}")


def sweep_once(folder: Path, root: Path, **fixed) -> tuple[list[str], Path]:
    """`actsweep sweep` arguments of the one-run tiny sweep in `folder` (30 steps, validating every
    10), with `fixed` settings, and its run's folder under `root`."""
    sweep_file = write_sweep(folder / f"{root.name}.yaml", write_tiny_base(folder), ONE_RUN, [0], fixed=fixed)
    return [str(sweep_file), "--root", str(root), "--no-report"], root / "tiny" / RELU


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    args, run_dir = sweep_once(folder, folder / "root")
    assert runner.main(args) == 0
    return run_dir


# -- 1. a preemption loses nothing ------------------------------------------------------------------


def test_preemption_at_a_validating_step_and_at_the_last_step_loses_nothing(uninterrupted, tmp_path, child_imports_faults):
    """SIGUSR2 (SLURM's warning) during step 10, which validates, then, in the rerun a requeue does,
    SIGTERM during step 30, the last: every value the uninterrupted run logged is logged, the same."""
    fault = signal_once(tmp_path / "signalled", [9, 29], sig=["SIGUSR2", "SIGTERM"])
    args, run_dir = sweep_once(tmp_path, tmp_path / "root", **fault)
    assert runner.main(args) == 1 and read_status(run_dir)["status"] == "interrupted"
    assert "SaveOnSignal: SIGUSR2 at step 10" in (run_dir / "fit.log").read_text()
    assert runner.main(args) == 0 and read_status(run_dir)["status"] == "finished"
    assert (tmp_path / "signalled.29").exists()  # the second signal did land
    resumed, reference = read_scalars(run_dir), read_scalars(uninterrupted)
    assert sorted(resumed) == sorted(reference)
    for tag, values in reference.items():
        assert list(resumed[tag].index) == list(values.index), tag
        assert resumed[tag].to_numpy() == pytest.approx(values.to_numpy(), abs=1e-6, nan_ok=True), tag
    assert len(resumed["val/loss"]) == 3  # after steps 10, 20 and 30


# -- 4. readers that do not misreport ---------------------------------------------------------------


def copy_run(run_dir: Path, sweep_dir: Path, seed: int) -> Path:
    """`run_dir` as the run of `seed` in `sweep_dir` (its run.json saying so)."""
    name = RELU.replace("seed=0", f"seed={seed}")
    copy = shutil.copytree(run_dir, sweep_dir / name)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "name": name, "seed": seed}))
    return copy


def test_truncated_event_file_is_an_unreadable_run_not_a_result(uninterrupted, tmp_path):
    """An event file cut mid-record (status.json says finished): the run is warned about, listed as
    Unreadable, and left out of the configuration's mean, which is the other seed's alone."""
    sweep_dir = tmp_path / "tiny"
    cut, whole = copy_run(uninterrupted, sweep_dir, 0), copy_run(uninterrupted, sweep_dir, 1)
    events = event_files(cut)[-1]
    events.write_bytes(events.read_bytes()[: events.stat().st_size // 2 + 3])
    assert events_problem(cut, live=True) is None  # a running fit's last record may be half flushed
    with pytest.warns(UserWarning, match=r"seed=0: .* is cut short .*\(unreadable\)"):
        report = write_report(sweep_dir).read_text()
    runs = pd.read_csv(sweep_dir / "results.csv").set_index("seed")
    assert runs.status[0] == "Unreadable" and pd.isna(runs.val_loss[0])
    assert runs.status[1] == "Stable" and runs.val_loss[1] == pytest.approx(read_scalars(whole)["val/loss"].iloc[-1])
    assert f"`{cut.name}`: Unreadable — {events.name} is cut short" in report
    assert "| 1 | " in report  # n: one seed in the mean


def flip_a_weight_bit(path: Path) -> None:
    """One bit of the largest tensor in the checkpoint's zip archive, as a bad disk would flip it."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_and_extra = int.from_bytes(data[entry.header_offset + 26:entry.header_offset + 28], "little") \
        + int.from_bytes(data[entry.header_offset + 28:entry.header_offset + 30], "little")
    data[entry.header_offset + 30 + name_and_extra + entry.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_checkpoint_without_its_sidecar_is_verified_not_trusted(tmp_path):
    finished_fit(tmp_path / "fit")
    (fitted,) = (tmp_path / "fit" / "logs" / "tiny").iterdir()
    run_dir = tmp_path / "run"
    shutil.copytree(fitted / "checkpoints", run_dir / "checkpoints")
    write_status(run_dir, "interrupted", 1)
    last = run_dir / "checkpoints" / "last.ckpt"
    checksum_path(last).unlink()
    assert plan.plan(run_dir) == ("resume", last)  # intact: its zip entries match their CRC-32
    flip_a_weight_bit(last)
    assert "damaged (no last.ckpt.sha256 beside it, and the CRC-32 of its entry" in checkpoint_problem(last)
    with pytest.warns(UserWarning, match="starting the run again from scratch"):
        assert plan.plan(run_dir) == ("start", None)
    last.write_bytes(b"not a zip archive")
    assert "unverifiable" in checkpoint_problem(last)



@pytest.mark.parametrize("plugged", [True, False], ids=["plugin on a plain ModelCheckpoint", "installed by ValidatedCheckpoint"])
def test_every_checkpoint_lightning_writes_carries_its_sha256_and_a_removed_one_takes_it_along(tmp_path, plugged):
    """Top-1 of a checkpoint every 2 steps over 6: Lightning writes three and removes two; the one it
    keeps (and last.ckpt) has its digest beside it, the removed ones leave no record, no temporary stays."""
    module, data = tiny_modules(tmp_path, dropout=0.0)
    kind = ModelCheckpoint if plugged else ValidatedCheckpoint
    saver = kind(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=1, monitor="step", mode="max",
                 filename="{step}", save_last=True)
    trainer = tiny_trainer(tmp_path, [saver], max_steps=6, enable_checkpointing=True,
                           plugins=[ChecksummedCheckpointIO()] if plugged else None)
    trainer.fit(module, data)
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["last.ckpt", "last.ckpt.sha256", "step=6.ckpt", "step=6.ckpt.sha256"]
    for name in ("last.ckpt", "step=6.ckpt"):
        path = tmp_path / "ckpt" / name
        assert json.loads(checksum_path(path).read_text())["sha256"][0] == sha256_file(path)



def test_background_writes_are_checksummed_whole_and_the_wrong_nesting_is_refused(tmp_path):
    """An AsyncCheckpointIO keeps its background thread, with the checksummed write inside it; wrapping
    it the other way round (hashing before the thread wrote the file) is refused."""
    module, data = tiny_modules(tmp_path, dropout=0.0)
    saver = ValidatedCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=0, save_last=True)
    trainer = tiny_trainer(tmp_path, [saver], max_steps=4, enable_checkpointing=True, plugins=[AsyncCheckpointIO()])
    trainer.fit(module, data)
    assert isinstance(trainer.strategy.checkpoint_io, AsyncCheckpointIO)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert json.loads(checksum_path(last).read_text())["sha256"][0] == sha256_file(last)
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    with pytest.raises(ConfigError, match="use AsyncCheckpointIO\\(ChecksummedCheckpointIO\\(\\)\\)"):
        ChecksummedCheckpointIO(AsyncCheckpointIO())


def test_the_checksummed_writer_is_a_plugin_the_command_line_takes(tmp_path):
    """`--trainer.plugins actsweep.train.checkpoints.ChecksummedCheckpointIO` with Lightning's own
    ModelCheckpoint: its checkpoint has a matching digest beside it."""
    config = write_config(tmp_path)
    saver = '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "%s"}}]'
    actsweep_cli.main(["fit", "--config", str(config), "--trainer.max_steps", "2", "--trainer.callbacks", saver % (tmp_path / "ckpt"),
              "--trainer.plugins", "actsweep.train.checkpoints.ChecksummedCheckpointIO"])
    (checkpoint,) = (tmp_path / "ckpt").glob("*.ckpt")
    assert json.loads(checksum_path(checkpoint).read_text())["sha256"][0] == sha256_file(checkpoint)


@pytest.mark.parametrize("refusal", ["too many jobs", "a stale run busy elsewhere"])
def test_restart_stale_deletes_nothing_for_a_refused_sweep(tmp_path, capsys, refusal):
    base = write_tiny_base(tmp_path)
    grid, root = [{"model.activation": ["relu", "gelu"]}], tmp_path / "root"
    first = sw.load_sweep(write_sweep(tmp_path / "a.yaml", base, grid, [0], fixed={"trainer.max_steps": 30}))
    launchers.run_local(first, root, first.runs(), launch=fake_launcher([]))
    changed = write_sweep(tmp_path / "b.yaml", base, grid, [0], fixed={"trainer.max_steps": 60})
    args = [str(changed), "--root", str(root), "--restart-stale"]
    held = None
    if refusal == "too many jobs":
        args += ["--jobs", str(4 * (os.cpu_count() or 1))]
    else:
        held = lock_run(root / "tiny" / "activation=gelu,seed=0")  # the second of the two stale runs
    before = snapshot(root)
    try:
        assert runner.main(args) == 2
    finally:
        if held is not None:
            os.close(held)
    err = capsys.readouterr().err
    assert err.startswith("actsweep: error:") and len(err.splitlines()) == 1, err
    assert snapshot(root) == before


# -- 5. failed writes ------------------------------------------------------------------------------


def file_size_limit(limit: int):
    """A child's `preexec_fn`: every file it writes stops at `limit` bytes (EFBIG), a real failed write."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("actsweep: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_report_write_that_fails_names_the_file_and_leaves_the_old_report(uninterrupted, tmp_path, child_imports_faults):
    sweep_dir = tmp_path / "tiny"
    copy_run(uninterrupted, sweep_dir, 0)
    write_report(sweep_dir)
    assert (sweep_dir / "train_loss.png").stat().st_size > 20_000
    before = snapshot(sweep_dir)
    child = subprocess.run([sys.executable, "-m", "actsweep.cli", "report", str(sweep_dir)], capture_output=True,
                           text=True, preexec_fn=file_size_limit(20_000))
    assert child.returncode == 2
    assert one_error_line(child.stderr) == f"actsweep: error: cannot write {sweep_dir / 'train_loss.png'} (File too large); " \
        "choose a writable folder: --trainer.logger.save_dir (logs, checkpoints), --data.cache_dir (token cache)"
    assert snapshot(sweep_dir) == before  # no half PNG, no temporary file


def test_status_that_cannot_be_written_is_still_reported(tmp_path):
    """A fit that died on a full disk, whose status.json cannot be rewritten either (this process's files
    limited to 16 bytes for the call): the sweep still reports it crashed, naming the file, and the old
    status.json stays whole."""
    write_status(tmp_path, "running", 5)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, limits[1]))
    try:
        status = settle(tmp_path, 1, "see fit.log")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert status["status"] == "crashed" and f"File too large: '{tmp_path / 'status.json'}'" in status["reason"]
    assert read_status(tmp_path)["status"] == "running" and not list(tmp_path.glob(".status.json.tmp-*"))


KILLED_SAVE = """
import os, signal, sys
from actsweep.train import checkpoints
checkpoints.write_checksum = lambda written, path: os.kill(os.getpid(), signal.SIGKILL)  # checkpoint written, not renamed
from actsweep import cli
cli.main(sys.argv[1:])
"""


def test_fit_out_of_space_is_crashed_naming_the_file_and_leaves_no_temporary(tmp_path, child_imports_faults):
    """A fit killed mid-save leaves `.last.ckpt.tmp-PID`, which the next fit's start removes; a fit
    whose checkpoint cannot be written (its files are limited to 200 kB, the checkpoint is 390) leaves
    no temporary file, ends `crashed` naming the file, and says so in one line."""
    fit = ["fit", "--config", str(write_config(tmp_path)), "--trainer.logger.version", "run"]
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, *fit], capture_output=True)
    checkpoints = tmp_path / "logs" / "tiny" / "run" / "checkpoints"
    assert killed.returncode == -signal.SIGKILL and len(list(checkpoints.glob(".last.ckpt.tmp-*"))) == 1
    ValidatedCheckpoint(dirpath=checkpoints).setup(tiny_trainer(tmp_path, []), None, "fit")  # as a fit starts
    assert list(checkpoints.iterdir()) == []
    child = subprocess.run([sys.executable, "-m", "actsweep.cli", *fit], capture_output=True, text=True,
                           preexec_fn=file_size_limit(200_000))
    assert child.returncode == 2
    assert one_error_line(child.stderr) == f"actsweep: error: cannot write {checkpoints / 'last.ckpt'} " \
        "(File too large); choose a writable folder: --trainer.logger.save_dir (logs, checkpoints), --data.cache_dir (token cache)"
    assert sorted(p.name for p in checkpoints.iterdir()) == []
    status = read_status(checkpoints.parent)
    assert status["status"] == "crashed" and f"File too large: '{checkpoints / 'last.ckpt'}'" in status["reason"]


# -- 9. records that are valid JSON but no record ----------------------------------------------------


def test_status_and_run_records_holding_a_bare_number_do_not_stop_a_sweep(tmp_path, capsys):
    """`42` in one run's status.json and another's run.json: the sweep plans on (the first run has no
    status, so it runs again; the second is grouped by its name), the report reads both, no traceback."""
    base = write_tiny_base(tmp_path)
    sweep_file = write_sweep(tmp_path / "s.yaml", base, [{"model.activation": ["relu", "gelu"]}], [0])
    root = tmp_path / "root"
    sweep = sw.load_sweep(sweep_file)
    runner.write_manifest(sweep, root)
    launchers.run_local(sweep, root, sweep.runs(), launch=fake_launcher([]))
    (root / "tiny" / RELU / "status.json").write_text("42")
    (root / "tiny" / "activation=gelu,seed=0" / "run.json").write_text("42")
    capsys.readouterr()
    assert runner.main([str(sweep_file), "--root", str(root), "--dry-run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 1 and RELU in commands[0]  # the other is finished, skipped
    assert sorted(log.dir.name for log in read_runs(root / "tiny")) == ["activation=gelu,seed=0", RELU]


# -- 3. staleness over everything that determines a run ------------------------------------------------


def write_split_base(folder: Path) -> Path:
    """The tiny base config with its model section in `model.yaml`, which it includes."""
    base = write_tiny_base(folder)
    config = yaml.safe_load(base.read_text())
    (folder / "model.yaml").write_text(yaml.safe_dump(config.pop("model")))
    base.write_text(yaml.safe_dump({**config, "model": "model.yaml"}))
    return base


def test_changes_no_sweep_file_shows_make_the_finished_run_stale(tmp_path, capsys):
    """`n_embd` changed in a config file that the base config includes, a byte added to the corpus, to
    the tokenizer file: each makes the finished run stale (refused, nothing touched); put back, it is
    reused."""
    base = write_split_base(tmp_path)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"model": {"type": "BPE"}}')
    sweep_file = write_sweep(tmp_path / "s.yaml", base, ONE_RUN, [0], fixed={"data.tokenizer": f"hf:{tokenizer}"})
    root = tmp_path / "root"
    dry_run = [str(sweep_file), "--root", str(root), "--dry-run"]
    sweep = sw.load_sweep(sweep_file)
    launchers.run_local(sweep, root, sweep.runs(), launch=fake_launcher([]))
    before = snapshot(root)
    edits = {"an included config file": tmp_path / "model.yaml", "the corpus": tmp_path / "corpus.txt",
             "the tokenizer file": tokenizer}
    for change, edited in edits.items():
        original = edited.read_text()
        edited.write_text(original.replace("n_embd: 32", "n_embd: 48") if edited.suffix == ".yaml" else original + " ")
        capsys.readouterr()
        assert runner.main(dry_run) == 2, change
        assert f"{RELU} ({change} changed)" in one_error_line(capsys.readouterr().err)
        assert snapshot(root) == before
        edited.write_text(original)
    capsys.readouterr()
    assert runner.main(dry_run) == 0 and capsys.readouterr().out == ""  # the same content again: reused


# -- 2. finished runs are read-only to every command ---------------------------------------------------


@pytest.fixture(scope="module")
def done_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 5-step tiny run in `logs/tiny/run` (threads 1, a held-out test split); copy it to change it."""
    folder = tmp_path_factory.mktemp("done")
    config = write_config(folder, trainer={"max_steps": 5}, data={"test_fraction": 0.05})
    assert runner_free_fit(["--config", str(config), "--trainer.logger.version", "run", "--threads", "1"]) == 0
    return folder / "logs" / "tiny" / "run"


def runner_free_fit(args: list[str]) -> int:
    """`actsweep fit ARGS` in a child process (its threads and seed are its own): the exit status."""
    return subprocess.run([sys.executable, "-m", "actsweep.cli", "fit", *args], capture_output=True).returncode


def own_files(run_dir: Path) -> dict[str, bytes | None]:
    """What the run itself is: every file under it but the evaluations' folders."""
    return {name: data for name, data in snapshot(run_dir).items() if name.split("/")[0] not in ("validate", "test")}


@pytest.mark.parametrize("command, locked", [("validate", False), ("validate", True), ("test", True)])
def test_evaluating_a_finished_run_leaves_it_as_it_was(done_run, tmp_path, capsys, command, locked):
    """The README's `validate --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt`, with other
    validation windows, also while a sweep holds the run: the run's config, events and status stay as
    they were, the results go to RUN/<command>/version_0, and the report reads the run as before."""
    run_dir = shutil.copytree(done_run, tmp_path / "tiny" / "run")
    held = lock_run(run_dir) if locked else None
    before, scalars = own_files(run_dir), read_scalars(run_dir)
    try:
        code, err = run_main([command, "--config", str(run_dir / "config.yaml"), "--ckpt_path",
                              str(run_dir / "checkpoints" / "last.ckpt"), "--data.val_windows", "8"], capsys)
    finally:
        if held is not None:
            os.close(held)
    assert code == 0, err
    assert own_files(run_dir) == before
    evaluation = run_dir / command / "version_0"
    assert f"{command.replace('validate', 'val')}/loss" in read_scalars(evaluation) and (evaluation / "config.yaml").exists()
    (logged,) = read_runs(run_dir.parent)
    assert logged.dir == run_dir and logged.scalars.keys() == scalars.keys()
    assert all(logged.scalars[tag].equals(values) for tag, values in scalars.items())


def test_evaluation_that_would_write_into_the_run_is_refused(done_run, tmp_path, capsys):
    """No logger, so Lightning would write config.yaml into `default_root_dir`: the run's own folder."""
    run_dir = shutil.copytree(done_run, tmp_path / "run")
    before = snapshot(tmp_path)
    error = fit_error(["validate", "--config", str(run_dir / "config.yaml"), "--trainer.logger", "false",
                       "--trainer.default_root_dir", str(run_dir), "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")],
                      capsys)
    assert f"validate would write into the run folder {run_dir}; give the logger a save_dir" in error
    assert snapshot(tmp_path) == before


FIT_PATHS = {  # how a fit's folder can be the finished run's (ROOT: the run's save_dir)
    "its config, save_dir and another run's checkpoint": ["--trainer.logger.save_dir", "{root}", "--ckpt_path", "{other}"],
    "its config alone, while a sweep holds it": [],
    "no logger, default_root_dir": ["--trainer.logger", "false", "--trainer.default_root_dir", "{run}"],
    "a checkpoint callback's dirpath": ["--trainer.logger.version", "elsewhere", "--trainer.callbacks",
                                        '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                                        '"init_args": {"dirpath": "{run}/checkpoints"}}]'],
}


@pytest.mark.parametrize("path", FIT_PATHS)
def test_fit_never_enters_a_finished_run(done_run, tmp_path, capsys, path):
    run_dir = shutil.copytree(done_run, tmp_path / "logs" / "tiny" / "run")
    other = shutil.copytree(done_run / "checkpoints", tmp_path / "other" / "checkpoints") / "last.ckpt"
    values = {"{root}": str(tmp_path / "logs"), "{other}": str(other), "{run}": str(run_dir)}
    args = [arg for arg in FIT_PATHS[path]]
    for key, value in values.items():
        args = [arg.replace(key, value) for arg in args]
    held = lock_run(run_dir) if "sweep holds" in path else None
    before = snapshot(tmp_path)
    try:
        error = fit_error(["fit", "--config", str(run_dir / "config.yaml"), *args], capsys)
    finally:
        if held is not None:
            os.close(held)
    assert "already holds a finished run; choose another --trainer.logger.version" in error
    assert snapshot(tmp_path) == before


# -- 6. a resume changes no setting that changes the numbers --------------------------------------------


RESUME_CHANGES = [
    (["--seed_everything", "8"], "data.seed: 7 -> 8; seed_everything: 7 -> 8"),
    (["--train_seed", "5"], "data.seed: 7 -> 5; train_seed: None -> 5"),
    (["--data.batch_size", "4"], "(data.batch_size: 8 -> 4)"),
    (["--data.block_size", "16"], "(model.block_size: 32 -> 16; data.block_size: 32 -> 16)"),
    (["--data.sampling", "uniform"], "(data.sampling: 'step' -> 'uniform')"),
    (["--data.val_windows", "null"], "(data.val_windows: 16 -> None)"),
    (["--threads", "2"], "(threads: 1 -> 2)"),
    (["--trainer.precision", "64-true"], "(trainer.precision: '32-true' -> '64-true')"),
    (["--trainer.accumulate_grad_batches", "2"], "(trainer.accumulate_grad_batches: 1 -> 2)"),
    (["--global_batch_size", "16"], "(global_batch_size: None -> 16)"),
    (["--trainer.gradient_clip_val", "0.5"], "(trainer.gradient_clip_val: 0.0 -> 0.5)"),
    (["--trainer.max_steps", "10"], "(trainer.max_steps: 5 -> 10)"),  # the cosine schedule spreads over it
]


@pytest.mark.parametrize("change, listed", RESUME_CHANGES, ids=[change[0] for change, _ in RESUME_CHANGES])
def test_resume_with_settings_that_change_the_numbers_is_refused(done_run, tmp_path, capsys, change, listed):
    args = ["fit", "--config", str(done_run / "config.yaml"), "--trainer.logger.save_dir", str(tmp_path),
            "--ckpt_path", str(done_run / "checkpoints" / "last.ckpt")]
    error = fit_error([*args, *change], capsys)
    assert f"was trained with other settings {listed}" in error or listed in error, error
    assert "use the run's own config.yaml" in error and list(tmp_path.iterdir()) == []


def test_resume_may_change_what_does_not_change_the_numbers(done_run, tmp_path):
    """Logging, validation and where the cache is: the resume goes ahead. The run is one killed after
    its last checkpoint (still `running`), resumed in its own folder: the fit ends at once, finished."""
    run_dir = shutil.copytree(done_run, tmp_path / "logs" / "tiny" / "run")
    write_status(run_dir, "running", 5)
    assert runner_free_fit(["--config", str(done_run / "config.yaml"), "--trainer.logger.save_dir", str(tmp_path / "logs"),
                            "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"),
                            "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "3",
                            "--data.cache_dir", str(tmp_path / "cache")]) == 0
    assert read_status(run_dir)["status"] == "finished"


def test_a_new_run_folder_from_a_checkpoint_at_its_runs_end_is_refused(done_run, tmp_path, capsys):
    """Lightning would stop at once and leave a folder without status or checkpoint."""
    error = fit_error(["fit", "--config", str(done_run / "config.yaml"), "--trainer.logger.save_dir", str(tmp_path),
                       "--ckpt_path", str(done_run / "checkpoints" / "last.ckpt")], capsys)
    assert "is at step 5, the end of its run (max_steps 5): nothing is left to train" in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_logger_that_resolves_to_the_run_folder_is_refused_before_writing(done_run, tmp_path, capsys, command):
    """A logger whose folder only the trainer resolves (no save_dir the settings show) is refused once
    resolved, before anything is written."""
    run_dir = shutil.copytree(done_run, tmp_path / "run")
    logger = json.dumps({"class_path": "faults.FolderLogger", "init_args": {"folder": str(run_dir)}})
    before = snapshot(tmp_path)
    # a fit from its last checkpoint is refused earlier (nothing left to train): this one starts afresh
    checkpoint = [] if command == "fit" else ["--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]
    error = work_error([command, "--config", str(run_dir / "config.yaml"), "--trainer.logger", logger, *checkpoint],
                       capsys)
    assert str(run_dir) in error and ("already holds a finished run" in error or "would write into the run" in error)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("model, counted", [([], True), (["--model.schedule", "constant"], False),
                                            (["--model.schedule", "constant", "--model.warmup", "0.1"], True),
                                            (["--model.schedule", "constant", "--model.warmup", "3"], False)])
def test_run_length_is_compared_only_where_the_schedule_spreads_over_it(tmp_path, model, counted):
    """A constant learning rate (no warmup, or one of a fixed number of steps) may run longer on resume."""
    config = cli.cli_parser().parse_args(["fit", "--config", str(write_config(tmp_path)), *model]).fit
    assert ("trainer.max_steps" in cli.resume_settings(config)) is counted
