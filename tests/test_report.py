"""The report: its numbers against the event files read independently, its rules, published numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util

from actsweep.study import report
from actsweep.study.published import published_for


def last_logged(run_dir: Path, tag: str) -> float:
    """Minimal independent reader: the latest-written value of `tag` at the largest step."""
    points: dict[int, tuple[float, float]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    number = value.simple_value if value.HasField("simple_value") else float(
                        tensor_util.make_ndarray(value.tensor))
                    if event.step not in points or event.wall_time >= points[event.step][0]:
                        points[event.step] = (event.wall_time, number)
    return points[max(points)][1] if points else math.nan


def test_results_equal_the_event_files(finished_sweep):
    results = pd.read_csv(finished_sweep / "results.csv")
    assert len(results) == 6
    finished = results[results.status != "Diverged"]
    assert len(finished) == 4
    for row in finished.itertuples():
        run_dir = finished_sweep / row.run
        assert row.val_loss == pytest.approx(last_logged(run_dir, "val/loss"), rel=1e-7)
        assert row.val_ppl == pytest.approx(last_logged(run_dir, "val/ppl"), rel=1e-7)
        assert row.inactive_pct == pytest.approx(100 * last_logged(run_dir, "ffn/inactive_frac"), rel=1e-6)
        assert row.grad_norm == pytest.approx(last_logged(run_dir, "grad/norm"), rel=1e-7)
        assert row.top_band_max_pct == pytest.approx(100 * last_logged(run_dir, "attn/heads_in_band/max_top_quarter"), rel=1e-6)
        assert row.seed in (0, 1)


def test_mean_and_interval_over_seeds_match_scipy(finished_sweep):
    table = (finished_sweep / "report.md").read_text()
    for activation in ("relu", "gelu"):
        losses = np.array([last_logged(finished_sweep / f"activation={activation},seed={s}", "val/loss") for s in (0, 1)])
        mean, sem = losses.mean(), losses.std(ddof=1) / np.sqrt(2)
        low, high = scipy.stats.t.interval(0.95, 1, loc=mean, scale=sem)
        row = next(line for line in table.splitlines() if line.startswith(f"| {activation} |  |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "2"  # n
        assert cells[3] == f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        assert cells[-1] in ("Stable", "Unstable (1/2)", "Unstable (2/2)")


def test_paired_differences_in_the_report(finished_sweep):
    paired = pd.read_csv(finished_sweep / "paired.csv")
    row = paired[(paired.comparison == "gelu − relu")].iloc[0]
    diffs = [last_logged(finished_sweep / f"activation=gelu,seed={s}", "val/loss")
             - last_logged(finished_sweep / f"activation=relu,seed={s}", "val/loss") for s in (0, 1)]
    low, high = scipy.stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=scipy.stats.sem(diffs))
    assert row.n == 2 and row["mean"] == pytest.approx(np.mean(diffs), rel=1e-9)
    assert (row.low, row.high) == pytest.approx((low, high), rel=1e-9)
    assert "## Paired differences" in (finished_sweep / "report.md").read_text()


def test_figures_written(finished_sweep):
    for name in ("val_loss.png", "entropy_bands.png", "head_entropy.png"):
        assert (finished_sweep / name).stat().st_size > 1000
        assert f"]({name})" in (finished_sweep / "report.md").read_text()


def test_published_numbers_match_by_configuration():
    assert published_for("blog", {"model.lr": "1e-3", "model.activation": "gelu", "model.norm": "layernorm"})["val_loss"] == 0.85
    sm_g = published_for("revival", {"model.norm": "none", "model.activation": "gelu"})
    assert sm_g["ppl"] == 3.197 and sm_g["top_band_pct"] == 58.0
    assert published_for("revival", {"model.norm": "none", "model.activation": "learnable_leaky_relu"}) == {}
    assert published_for(None, {"model.lr": 1e-3}) == {}
