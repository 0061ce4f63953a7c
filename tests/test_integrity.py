"""Finished work is never touched and a result is never misreported (issue 26): real signals inside
real fits, damaged event files and checkpoints, failed writes, odd records, hidden config changes.
Each test builds its own small corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from actsweep.status import read_status
from actsweep.study import runner
from actsweep.study.logs import read_scalars
from faults import signal_once
from helpers import write_sweep, write_tiny_base

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
