"""The report's figures on hand-built run logs (no training): the entropy-band figure tells 12
configurations apart, keeps its legend off the panels and labels each panel's bands by its own
reference; the training-loss figure draws each configuration's seed mean and range."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from actsweep.board import band_tag
from actsweep.study.figures import (bands_figure, forest_figure, plot_bands, plot_slopes, plot_train_loss,
                                    slopes_figure, styles, train_loss_figure)
from actsweep.study.logs import RunLog
from actsweep.study.outcomes import smoothed_train_loss
from actsweep.study.paired import difference_row
from actsweep.study.review import claims_table

CONFIGS = [f"config {i}" for i in range(12)]


def log(config: str, seed: int, status: str = "finished", train: pd.Series | None = None, shares=None) -> RunLog:
    scalars = {band_tag(kind, b): pd.Series([share], index=[100])
               for kind in ("max", "uniform") for b, share in enumerate(shares or (0.1, 0.2, 0.3, 0.4))}
    if train is not None:
        scalars["train/loss"] = train
    return RunLog(Path("."), {"name": f"{config},seed={seed}", "config": config, "seed": seed}, {"status": status}, scalars)


def test_twelve_configurations_get_distinct_colour_and_marker_and_a_legend_off_the_panels():
    fig = bands_figure({c: [log(c, 0)] for c in CONFIGS})
    fig.canvas.draw()
    lines = [line for line in fig.axes[0].get_lines()]
    assert len({line.get_color() for line in lines}) == 12 and len({line.get_marker() for line in lines}) == 12
    legend = fig.legends[0].get_window_extent()
    assert all(not legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert not any(ax.get_legend() for ax in fig.axes)  # no legend inside a panel
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["[0, m/4)", "[m/4, m/2)", "[m/2, 3m/4)", "[3m/4, m]"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["[0, U/4)", "[U/4, U/2)", "[U/2, 3U/4)", "[3U/4, U]"]
    assert "ln(T!)/T" in fig.axes[1].get_title() and "largest head entropy m" in fig.axes[0].get_title()
    plt.close(fig)
    assert len(set(map(str, styles([str(i) for i in range(20)]).values()))) == 20


def test_each_panel_shows_its_own_bands_mean_over_seeds():
    logs = [log("a", 0, shares=(0.0, 0.0, 0.5, 0.5)), log("a", 1, shares=(0.0, 0.0, 0.1, 0.9))]
    logs[0].scalars[band_tag("uniform", 3)] = pd.Series([1.0], index=[100])
    fig = bands_figure({"a": logs})
    paper, uniform = (ax.get_lines()[0].get_ydata() for ax in fig.axes)
    assert list(paper) == pytest.approx([0, 0, 30, 70]) and uniform[3] == pytest.approx(95)
    plt.close(fig)
    assert bands_figure({"a": [RunLog(Path("."), {"config": "a"}, {}, {})]}) is None
    nan = (float("nan"),) * 4  # a diverged run's last probe: no legend entry for nothing drawn
    fig = bands_figure({"a": logs, "b": [log("b", 0, status="diverged", shares=nan)]})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a (n=2)"]
    plt.close(fig)


def test_training_loss_shows_the_mean_of_smoothed_seeds_with_their_range(tmp_path):
    steps = np.arange(1, 101)
    trains = [pd.Series(3.0 - 0.005 * steps + shift, index=steps) for shift in (0.0, 0.2)]
    diverged = pd.Series(np.r_[np.full(50, 3.0), np.full(50, 1e6)], index=steps)
    groups = {"a": [log("a", 0, train=trains[0]), log("a", 1, train=trains[1]),
                    log("a", 2, status="diverged", train=diverged)], "b": [log("b", 0, train=trains[0])]}
    fig = train_loss_figure(groups)
    ax = fig.axes[0]
    mean_a = ax.get_lines()[0]
    expected = (smoothed_train_loss(trains[0]) + smoothed_train_loss(trains[1])) / 2
    assert np.allclose(mean_a.get_ydata(), expected.to_numpy())  # the diverged seed is left out
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(smoothed_train_loss(trains[0]).min())
    assert band.max() == pytest.approx(smoothed_train_loss(trains[1]).max())
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a (n=2)", "b (n=1)"]
    plt.close(fig)
    assert plot_train_loss(groups, tmp_path / "train.png") and plot_bands(groups, tmp_path / "bands.png")
    assert (tmp_path / "train.png").stat().st_size > 0 and not plot_train_loss({"c": [log("c", 0)]}, tmp_path / "x.png")


def test_slopes_show_the_seed_mean_with_its_t_interval(tmp_path):
    """Three seeds' slopes at 3 steps; the band at each step is scipy's t-interval; a diverged seed is left out."""
    values = {0: [0.25, 0.20, 0.15], 1: [0.25, 0.22, 0.18], 2: [0.25, 0.18, 0.10]}
    logs = [RunLog(Path("."), {"config": "leaky", "seed": s}, {"status": "finished"},
                   {"slope/layer_0": pd.Series(v, index=[0, 50, 100])}) for s, v in values.items()]
    logs.append(RunLog(Path("."), {"config": "leaky", "seed": 3}, {"status": "diverged"},
                       {"slope/layer_0": pd.Series([0.25, 9.0, 9.0], index=[0, 50, 100])}))
    fig = slopes_figure({"leaky": logs, "relu": [log("relu", 0)]})
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([0.25, 0.20, 0.1433333])
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    for step, seeds in zip([50, 100], [[0.20, 0.22, 0.18], [0.15, 0.18, 0.10]]):
        low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(seeds), scale=scipy.stats.sem(seeds))
        at_step = band[np.isclose(band[:, 0], step), 1]
        assert min(at_step) == pytest.approx(low) and max(at_step) == pytest.approx(high)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["leaky layer_0 (n=3)"]
    plt.close(fig)
    assert slopes_figure({"relu": [log("relu", 0)]}) is None
    assert plot_slopes({"leaky": logs}, tmp_path / "slopes.png") and (tmp_path / "slopes.png").stat().st_size > 10_000


def test_the_forest_plot_names_every_seed_a_sensitivity_row_leaves_out():
    """Two flagged runs in different seeds: the row's label names both, as claims.md does."""
    d = {s: 0.1 + 0.01 * s for s in range(5)}
    row = {"comparison": "relu − gelu", "key": "model.activation", "metric": "val_loss", "at": "norm=none",
           "declared": 0, **difference_row(d, "relu", "gelu"), "differences": d,
           "runs": {s: (f"relu{s}", f"gelu{s}") for s in d}, "side_a": "relu", "side_b": "gelu"}
    comparison = {"key": "model.activation", "a": "relu", "b": "gelu", "primary": True}
    claims = claims_table(pd.DataFrame([row]), [comparison], {"relu0": "act mean", "gelu3": "grad norm"})
    fig = forest_figure(claims)
    labels = [t.get_text().strip() for t in fig.axes[0].get_yticklabels()]
    plt.close(fig)
    assert labels == ["relu − gelu | norm=none", "… without seed 0, seed 3"]
