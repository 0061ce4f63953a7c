"""A run's lifecycle (`actsweep.status`): every transition, the one settling rule, and the status a
fit records whatever callbacks its config lists."""

from __future__ import annotations

import json

import pytest
import yaml

from actsweep.cli import main
from actsweep.status import STATES, STATUSES, advance, busy, ended, read_status, settle, write_status
from helpers import write_tiny_base

# The lifecycle's moves, written out (not read from TRANSITIONS): a done run never moves; crashed and
# interrupted ones only resume; a running one may end any way, or be resumed after dying silently.
ALLOWED = {(None, "running"), ("crashed", "running"), ("interrupted", "running"),
           *(("running", to) for to in ("running", "finished", "diverged", "crashed", "interrupted"))}


@pytest.mark.parametrize("start", [None, *STATUSES])
@pytest.mark.parametrize("to", STATUSES)
def test_every_transition(tmp_path, start, to):
    if start is not None:
        write_status(tmp_path, start, 7, "before", 2.5)
    record = advance(tmp_path, to, 9, "now", 1.5)
    on_disk = read_status(tmp_path)
    assert record == on_disk
    if (start, to) in ALLOWED:
        assert (on_disk["status"], on_disk["step"], on_disk["reason"], on_disk["val_loss"]) == (to, 9, "now", 1.5)
    elif start is None:
        assert on_disk is None  # nothing recorded: only a start makes a record
    else:
        assert (on_disk["status"], on_disk["step"], on_disk["reason"]) == (start, 7, "before")


@pytest.mark.parametrize("code, status, reason", [(0, "finished", ""), (1, "crashed", "exit code 1; see fit.log"),
                                                  (-9, "interrupted", "exit code -9; see fit.log"),
                                                  (None, "interrupted", "see fit.log")])
def test_settle_a_run_that_died_without_a_final_word(tmp_path, code, status, reason):
    write_status(tmp_path, "running", 12, "", 2.0)
    settled = settle(tmp_path, code, "see fit.log")
    assert (settled["status"], settled["step"], settled["reason"], settled["val_loss"]) == (status, 12, reason, 2.0)
    assert read_status(tmp_path)["status"] == status


@pytest.mark.parametrize("final", ["finished", "diverged", "crashed", "interrupted"])
def test_settle_keeps_the_final_word_a_run_wrote(tmp_path, final):
    write_status(tmp_path, final, 5, "its own")
    for code in (0, 1, -15, None):
        assert settle(tmp_path, code, "see fit.log")["status"] == final
    assert read_status(tmp_path)["reason"] == "its own"


def test_settle_a_run_that_never_wrote_and_a_busy_one(tmp_path):
    assert settle(tmp_path / "a", 1)["status"] == "crashed"  # it died before its first record
    write_status(tmp_path / "b", "running", 4)
    held = busy(tmp_path / "b", "in use by process 1")
    assert (held["status"], held["step"], held["reason"]) == ("busy", 4, "in use by process 1")
    assert read_status(tmp_path / "b")["status"] == "running"  # a busy run's record is not touched
    assert busy(tmp_path / "c", "x")["step"] == 0
    assert ended(tmp_path / "b") == "finished"
    write_status(tmp_path / "b", "diverged", 4)
    assert ended(tmp_path / "b") == "diverged"
    assert {"pending", "stale", "busy"} <= set(STATES) and set(STATUSES) < set(STATES)


def test_a_fit_without_divergence_guard_still_records_its_status(tmp_path, monkeypatch):
    """`actsweep fit` installs the status callback itself: a config listing no DivergenceGuard ends
    "finished" at its last step, with its validation loss."""
    base = write_tiny_base(tmp_path)
    config = yaml.safe_load(base.read_text())
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "DivergenceGuard" not in json.dumps(c)]
    config["trainer"].update(max_steps=6, val_check_interval=6)
    base.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(base), "--trainer.logger.save_dir", str(tmp_path / "logs"),
          "--trainer.logger.version", "run"])
    record = read_status(tmp_path / "logs" / "lightning_logs" / "run")
    assert (record["status"], record["step"]) == ("finished", 6) and record["val_loss"] > 0
