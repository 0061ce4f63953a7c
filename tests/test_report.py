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
    # the adjusted table of a sweep that names no comparison: each default comparison its own family
    claims = pd.read_csv(finished_sweep / "claims.csv")
    judged = claims[(claims.comparison == "gelu − relu") & (claims.kind == "comparison")].iloc[0]
    assert judged.p == pytest.approx(scipy.stats.ttest_1samp(diffs, 0).pvalue) and judged.m == 1
    assert judged.p_adj == pytest.approx(judged.p) and judged.claim in ("unresolved", "untestable")
    assert "## Adjusted for multiple comparisons" in (finished_sweep / "report.md").read_text()


def test_figures_written(finished_sweep):
    for name in ("train_loss.png", "val_loss.png", "entropy_bands.png", "head_entropy.png", "forest.png"):
        assert (finished_sweep / name).stat().st_size > 1000
        assert f"]({name})" in (finished_sweep / "report.md").read_text()


def test_published_numbers_match_by_configuration():
    assert published_for("blog", {"model.lr": "1e-3", "model.activation": "gelu", "model.norm": "layernorm"})["val_loss"] == 0.85
    sm_g = published_for("revival", {"model.norm": "none", "model.activation": "gelu"})
    assert sm_g["ppl"] == 3.197 and sm_g["top_band_pct"] == 58.0
    assert published_for("revival", {"model.norm": "none", "model.activation": "learnable_leaky_relu"}) == {}
    assert published_for(None, {"model.lr": 1e-3}) == {}


def test_where_learnable_slopes_ended_is_reported_with_its_interval(tmp_path):
    slopes = {"learnable_leaky_relu": [0.16, 0.15, 0.17], "relu": [math.nan] * 3}
    runs, logs = [], []
    for activation, values in slopes.items():
        info = {"config": f"activation={activation}", "overrides": {"model.activation": activation}}
        logs.append(report.RunLog(tmp_path, info, {}, {}))
        runs += [{"config": info["config"], "label": None, "model.activation": activation, "seed": seed,
                  "status": "Stable", "val_loss": 2.0 + seed / 10, "val_ppl": 7.0, "slope": slope}
                 for seed, slope in enumerate(values)]
    frame = pd.DataFrame(runs)
    for column in ("inactive_pct", "dead_units_pct", "act_mean", "grad_norm", "top_band_max_pct", "top_band_uniform_pct",
                   "saturated_pct", "skipped_pct", "val_loss_se", "global_batch"):
        frame[column] = math.nan
    table = report.markdown_table(report.summarize(frame, logs), ["model.activation"]).splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    column = header.index("slope [95 % CI]")
    cells = {line.split("|")[1].strip(): line.strip("|").split("|")[column].strip() for line in table[2:]}
    low, high = scipy.stats.t.interval(0.95, 2, loc=0.16, scale=scipy.stats.sem([0.16, 0.15, 0.17]))
    assert cells == {"learnable_leaky_relu": f"0.1600 [{low:.4f}, {high:.4f}]", "relu": ""}
