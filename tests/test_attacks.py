"""The sweep's and the fit's promises under attack (issue 14): kills at the worst moment (real signals
inside real fits), damaged checkpoints and token caches, changed sweep settings, NaN statistics."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actsweep.board import band_tag
from actsweep.data import cache
from actsweep.data.tokenizers import get_tokenizer
from actsweep.io import sha256_file
from actsweep.stats.entropy import entropy_bands, heatmap_figure
from actsweep.status import read_status, write_status
from actsweep.study import launchers, plan, runner, sweep as sw
from actsweep.study.logs import read_runs, read_scalars
from actsweep.train.checkpoints import checkpoint_problem
from faults import signal_once
from helpers import fake_launcher, finished_fit, run_main, snapshot, write_config, write_sweep, write_tiny_base

TESTS = Path(__file__).resolve().parent
RELU = "activation=relu,seed=0"


@pytest.fixture
def child_imports_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"{TESTS}:{TESTS.parent}")


def same_curves(run_dir: Path, reference: Path) -> None:
    resumed, uninterrupted = read_scalars(run_dir), read_scalars(reference)
    for tag in ("val/loss", "train/loss"):
        assert list(resumed[tag].index) == list(uninterrupted[tag].index), tag
        assert resumed[tag].to_numpy() == pytest.approx(uninterrupted[tag].to_numpy(), abs=1e-6)


# -- 1. a kill between a step's checkpoint and its validation ----------------------------------------


def test_kill_at_validation_start_loses_no_validation(finished_sweep, tmp_path, child_imports_faults):
    """SIGKILL as validation starts at step 20, then as the final validation (step 30) starts: each
    rerun resumes before the lost validation, so every one is logged, as in the uninterrupted run."""
    base = finished_sweep.parent.parent / "tiny.yaml"
    fault = signal_once(tmp_path / "killed", [20, 30], hook="on_validation_start")
    sweep_file = write_sweep(tmp_path / "s.yaml", base, [{"model.activation": ["relu"]}], [0], fixed=fault)
    main = [str(sweep_file), "--root", str(tmp_path / "root"), "--no-report"]
    run_dir = tmp_path / "root" / "tiny" / RELU
    assert runner.main(main) == 1 and read_status(run_dir)["status"] == "interrupted"
    assert runner.main(main) == 1 and read_status(run_dir)["status"] == "interrupted"
    assert runner.main(main) == 0 and read_status(run_dir)["status"] == "finished"
    assert len(read_scalars(run_dir)["val/loss"]) == 3  # after steps 10, 20 and 30, none lost
    same_curves(run_dir, finished_sweep / RELU)


# -- 2. damaged checkpoints ------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "zero-byte":
        data = bytearray()
    elif how == "random":
        data = bytearray(rng.randbytes(len(data)))
    else:  # 64 flipped bytes, anywhere
        for i in rng.sample(range(len(data)), 64):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    finished_fit(folder)
    return folder / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("how", ["truncated", "zero-byte", "random", "64 flipped bytes"])
def test_damaged_checkpoint_is_passed_over_for_the_last_good_one(checkpoint, tmp_path, how):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("older.ckpt", "last.ckpt"):
        (folder / name).write_bytes(checkpoint.read_bytes())
        (folder / f"{name}.sha256").write_bytes(Path(f"{checkpoint}.sha256").read_bytes())
    write_status(run_dir, "interrupted", 5)
    assert plan.plan(run_dir) == ("resume", folder / "last.ckpt")
    damage(folder / "last.ckpt", how)
    assert "damaged" in checkpoint_problem(folder / "last.ckpt")
    with pytest.warns(UserWarning, match="last.ckpt is damaged"):
        assert plan.plan(run_dir) == ("resume", folder / "older.ckpt")
    damage(folder / "older.ckpt", how)
    with pytest.warns(UserWarning, match="no intact checkpoint; starting the run again from scratch"):
        assert plan.plan(run_dir) == ("start", None)


def test_flipped_checkpoint_restarts_the_run_instead_of_a_false_divergence(finished_sweep, tmp_path, child_imports_faults):
    base = finished_sweep.parent.parent / "tiny.yaml"
    fault = signal_once(tmp_path / "killed", [15])  # SIGKILL mid-run: the checkpoint of step 10 is on disk
    sweep_file = write_sweep(tmp_path / "s.yaml", base, [{"model.activation": ["relu"]}], [0], fixed=fault)
    main = [str(sweep_file), "--root", str(tmp_path / "root"), "--no-report"]
    run_dir = tmp_path / "root" / "tiny" / RELU
    assert runner.main(main) == 1
    damage(run_dir / "checkpoints" / "last.ckpt", "64 flipped bytes")
    with pytest.warns(UserWarning, match="starting the run again from scratch"):
        assert runner.main(main) == 0
    assert read_status(run_dir)["status"] == "finished"
    assert "--ckpt_path" not in (run_dir / "fit.log").read_text()  # started clean, not from the damage
    same_curves(run_dir, finished_sweep / RELU)


# -- 5. a sweep's settings change under its runs ------------------------------------------------------


def test_changed_settings_make_runs_stale_until_restarted(tmp_path, capsys):
    base = write_tiny_base(tmp_path)
    grid, root = [{"model.activation": ["relu", "gelu"]}], tmp_path / "root"
    first = sw.load_sweep(write_sweep(tmp_path / "a.yaml", base, grid, [0], fixed={"trainer.max_steps": 30}))
    calls: list = []
    launchers.run_local(first, root, first.runs(), launch=fake_launcher(calls))
    changed = write_sweep(tmp_path / "b.yaml", base, grid, [0], fixed={"trainer.max_steps": 60})
    before = snapshot(root)
    assert runner.main([str(changed), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "2 run(s)" in err and "activation=relu,seed=0 (trainer.max_steps: 30 -> 60)" in err and "--restart-stale" in err
    assert snapshot(root) == before  # nothing reused, nothing touched
    base_edit = tmp_path / "edited.yaml"
    base_edit.write_text(base.read_text() + "\n# an edit\n")
    edited = write_sweep(tmp_path / "c.yaml", base_edit, grid, [0], fixed={"trainer.max_steps": 30})
    assert runner.main([str(edited), "--root", str(root), "--dry-run"]) == 2
    assert "base config content changed" in capsys.readouterr().err
    assert runner.main([str(changed), "--root", str(root), "--restart-stale", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # both would start afresh
    calls.clear()
    plan.restart(sw.load_sweep(changed), root, [r.name for r in first.runs()])
    launchers.run_local(sw.load_sweep(changed), root, first.runs(), launch=fake_launcher(calls))
    assert len(calls) == 2 and not any("--ckpt_path" in c for c in calls)
    assert runner.main([str(changed), "--root", str(root), "--dry-run"]) == 0  # no longer stale


def test_report_keeps_only_the_current_grid(tmp_path):
    base = write_tiny_base(tmp_path)
    root = tmp_path / "root"
    typo = sw.load_sweep(write_sweep(tmp_path / "a.yaml", base, [{"model.activatoin": ["relu"]}], [0]))
    runner.write_manifest(typo, root)
    launchers.run_local(typo, root, typo.runs(), launch=lambda c, run_dir, e: write_status(run_dir, "crashed", 0, "x") and 1)
    fixed = sw.load_sweep(write_sweep(tmp_path / "b.yaml", base, [{"model.activation": ["relu"]}], [0]))
    runner.write_manifest(fixed, root)
    launchers.run_local(fixed, root, fixed.runs(), launch=fake_launcher([]))
    assert [log.dir.name for log in read_runs(root / "tiny")] == [RELU]


# -- 6. NaN statistics, SIGTERM ----------------------------------------------------------------------


def test_nan_entropies_are_nan_bands_and_a_drawable_heatmap():
    values = torch.tensor([[0.5, float("nan")], [1.0, 2.0]])
    assert entropy_bands(values, 2.0).isnan().all()
    assert entropy_bands(torch.tensor([0.1, 1.9]), float("nan")).isnan().all()
    heatmap_figure(values, 8, 0)  # draws NaN cells as blanks


def test_diverged_fit_with_nan_entropies_is_a_result_not_a_crash(tmp_path, capsys):
    callbacks = ["actsweep.stats.DivergenceGuard", "actsweep.stats.AttentionEntropy"]
    config = write_config(tmp_path, model={"init_std": 1e30})  # finite weights, infinite attention logits
    code, err = run_main(["fit", "--config", str(config), "--trainer.callbacks+", callbacks[1]], capsys)
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    assert code == 0 and "Traceback" not in err
    assert read_status(run)["status"] == "diverged"
    bands = read_scalars(run)[band_tag("max", 0)]
    assert len(bands) and bands.isna().all()


def test_sigterm_is_recorded_as_interrupted(tmp_path, child_imports_faults):
    config = write_config(tmp_path)
    fault = signal_once(tmp_path / "term", [3], sig="SIGTERM")["trainer.callbacks+"]
    fit = [sys.executable, "-m", "actsweep.cli", "fit", "--config", str(config),
           "--trainer.callbacks+", json.dumps(fault)]
    subprocess.run(fit, capture_output=True, check=False)
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    assert read_status(run)["status"] == "interrupted"


# -- 8. token caches ---------------------------------------------------------------------------------

DOCS = [f"document {i}: " + "the quick brown fox jumps over the lazy dog " * 20 for i in range(200)]


def build(folder: Path) -> cache.TokenArray:
    return cache.load_or_build("docs", "fp", lambda: DOCS, lambda: get_tokenizer("char", texts=DOCS),
                               meta={"source": "test", "split": "train"}, cache_dir=folder)


def rewrite_keeping_stamp(path: Path, data: bytes) -> None:
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("big", [False, True])
def test_cache_bytes_changed_under_the_same_stamp_are_found(tmp_path, monkeypatch, big):
    array = build(tmp_path)
    if big:  # a multi-GB cache: only sampled blocks are read; the change lands in the first one
        monkeypatch.setattr(cache, "FULL_HASH_BYTES", 0)
    data = bytearray(array.path.read_bytes())
    data[10] ^= 0x01
    rewrite_keeping_stamp(array.path, bytes(data))
    with pytest.warns(UserWarning, match=r"damaged \(sha256 mismatch\)"):
        assert cache.load("docs", "fp", tmp_path) is None


def test_cache_tokens_outside_the_vocabulary_are_damage(tmp_path):
    array = build(tmp_path)
    tokens = np.array(array.tokens)
    tokens[::100] = 999  # a char vocabulary of a few dozen symbols
    array.path.write_bytes(tokens.tobytes())
    meta_path = array.path.with_suffix(".json")  # the metadata vouches for the bytes: only the range can tell
    meta = json.loads(meta_path.read_text())
    meta.update(sha256=sha256_file(array.path), stamp=cache._stamp(array.path),
                sample_sha256=cache._sample_sha256(array.path))
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"token id 999 outside the vocabulary"):
        assert build(tmp_path).tokens.max() < 999


KILLED_BUILD = """
import os, signal, sys
from actsweep.board import band_tag
from actsweep.data import cache
from actsweep.data.tokenizers import get_tokenizer
docs = ["some text"] * 5000
tokenizer = get_tokenizer("char", texts=docs[:1])
real = tokenizer.encode_batch
def encode_then_die(texts):
    if os.path.exists(sys.argv[1] + "/docs.bin.tmp-" + str(os.getpid())):
        os.kill(os.getpid(), signal.SIGKILL)  # mid-build: tokens half written
    return real(texts)
tokenizer.encode_batch = encode_then_die
cache.build("docs", docs, tokenizer, {"fingerprint": "fp"}, sys.argv[1])
"""


def test_killed_cache_build_leaves_no_temporary_file_behind(tmp_path):
    child = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    assert child.returncode == -signal.SIGKILL
    assert len(list(tmp_path.glob("docs.bin.tmp-*"))) == 1  # what the killed build left
    build(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.bin", "docs.json"]
