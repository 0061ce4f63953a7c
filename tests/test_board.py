"""What TensorBoard shows besides scalars: the labelled heatmap, the Custom Scalars layout, the HParams
entry of a single fit, and old tag names read under today's."""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from actsweep import board, cli
from actsweep.stats.entropy import heatmap_figure
from actsweep.study import figures, report
from helpers import write_config

ROOT = Path(__file__).resolve().parent.parent
STATS = ["actsweep.stats.FFNStats", "actsweep.stats.GradNorms", "actsweep.stats.AttentionEntropy",
         "actsweep.stats.SlopeMonitor", "actsweep.stats.NormStats", "actsweep.stats.NonFiniteCounts",
         "actsweep.stats.sink.AttentionSink", "actsweep.stats.TensorBoardViews"]


def fit_layout() -> dict:
    """The layout the fit below declares: the module's charts and those of every statistic in STATS."""
    from actsweep.stats.base import statistics
    from actsweep.train.module import ActSweepModule

    names = {name.rsplit(".", 1)[1] for name in STATS}
    return board.layout(sum((k.declaration for k in statistics() if k.__name__ in names), ActSweepModule.declaration))


def events(run_dir: Path):
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        yield from EventFileLoader(str(path)).Load()


def scalar_tags(run_dir: Path) -> set[str]:
    return {v.tag for e in events(run_dir) for v in e.summary.value if v.metadata.plugin_data.plugin_name == "scalars"}


def test_band_and_head_names_say_what_they_are():
    assert board.band_tag("max", 3) == "attn/heads_in_band/max_top_quarter"
    assert board.band_tag("uniform", 0) == "attn/heads_in_band/uniform_bottom_quarter"
    with pytest.raises(ValueError, match="max, uniform"):
        board.band_tag("median", 0)
    assert board.current_tag("attn/band_uniform/2") == "attn/heads_in_band/uniform_third_quarter"
    assert board.current_tag("attn/head_entropy/layer_11/head_3") == "attn_heads/entropy/layer_11/head_3"
    assert board.HEAD_ENTROPY.fullmatch(board.head_entropy_tag(11, 3)).groups() == ("11", "3")
    for unchanged in ("attn/entropy/layer_0", "attn/head_entropy", "attn/band_max/4", "val/loss"):
        assert board.current_tag(unchanged) == unchanged


def test_heatmap_figure_labels_layers_heads_nats_and_the_ceiling():
    ent = torch.tensor([[0.5, 1.0, 2.0], [3.0, 0.25, 3.5]])
    fig = heatmap_figure(ent, T=128, step=300)
    ax, bar = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("head", "layer")
    assert "step 300" in ax.get_title() and "ln(T!)/T" in ax.get_title()
    np.testing.assert_array_equal(ax.images[0].get_array(), ent.numpy())
    assert ax.images[0].get_clim() == (0.0, pytest.approx(math.lgamma(129) / 128))
    assert [t.get_text() for t in ax.texts] == ["0.50", "1.00", "2.00", "3.00", "0.25", "3.50"]
    assert bar.get_ylabel() == "entropy (nats)"
    assert bar.get_yticklabels()[-1].get_text() == f"{math.lgamma(129) / 128:.2f}"  # 3.88, marked


@pytest.fixture(scope="module")
def fit_dir(tmp_path_factory) -> Path:
    """A tiny `actsweep fit` with every statistic, learnable per-layer slopes and DyT norms: its run folder."""
    folder = tmp_path_factory.mktemp("views")
    config = write_config(folder, model={"activation": "learnable_leaky_relu", "slope_scope": "layer", "norm": "dyt"})
    callbacks = [arg for name in STATS for arg in ("--trainer.callbacks+", name)]
    cli.main(["fit", "--config", str(config), "--trainer.max_steps", "4", "--trainer.val_check_interval", "2", *callbacks])
    (run_dir,) = (folder / "logs" / "tiny").iterdir()
    return run_dir


def test_custom_scalars_layout_is_written_once_and_every_chart_has_series(fit_dir):
    layouts = [v for e in events(fit_dir) for v in e.summary.value if v.metadata.plugin_data.plugin_name == "custom_scalars"]
    assert len(layouts) == 1
    layout = layout_pb2.Layout.FromString(layouts[0].tensor.string_val[0])
    scalars = scalar_tags(fit_dir)
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts == {title: spec[1] for charts in fit_layout().values() for title, spec in charts.items()}
    assert "attention mass on the first token per layer" in charts  # a statistic declared in one file
    for title, patterns in charts.items():
        shown = {t for t in scalars if any(re.fullmatch(p, t) for p in patterns)}
        assert shown, f"chart {title!r} has no series"
        if "per " in title:
            assert len(shown) >= 2, (title, shown)  # both layers on one chart
    per_layer = {t for t in scalars if re.search(r"/(layer|block)_\d+$", t) and not t.startswith("attn_heads/")}
    charted = {t for t in per_layer if any(re.fullmatch(p, t) for ps in charts.values() for p in ps)}
    assert charted == per_layer


def test_fit_hparams_entry_has_settings_and_final_metrics_without_internals(fit_dir):
    scalars = scalar_tags(fit_dir)
    assert "hp_metric" not in scalars
    entries = [(v.tag, plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content))
               for e in events(fit_dir) for v in e.summary.value if v.metadata.plugin_data.plugin_name == "hparams"]
    starts = [data.session_start_info for tag, data in entries if tag == "_hparams_/session_start_info"]
    assert len(starts) == 1 and len(list(fit_dir.glob("*.hparams"))) == 1
    params = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in starts[0].hparams.items()}
    assert params["model.activation"] == "learnable_leaky_relu" and params["model.lr"] == 3e-3
    assert params["data.batch_size"] == 8 and params["seed"] == 7 and params["status"] == "finished"
    assert params["model.betas"] == "[0.9, 0.95]" and "data.max_documents" not in params  # None: left out
    assert not [k for k in params if "._" in k or k.startswith("_")] and "model.compile" not in params
    (experiment,) = [data.experiment for tag, data in entries if tag == "_hparams_/experiment"]
    shown_first = {h.name for h in experiment.hparam_infos if h.differs}
    assert shown_first == {"model.activation", "model.norm", "model.lr", "seed"} and params["model.norm"] == "dyt"
    assert {h.name for h in experiment.hparam_infos} == set(params)
    metrics = [m.name.tag for m in experiment.metric_infos]
    from actsweep.study.columns import every_declaration

    assert metrics == [t for t in board.hparams_metrics(every_declaration()) if t in scalars]
    assert metrics[:5] == ["val/loss", "val/ppl", "ffn/dead_units", "attn/entropy", board.band_tag("uniform", 3)]
    assert {"val/loss", "val/ppl", "attn/entropy", "ffn/dead_units", board.band_tag("uniform", 3)} <= set(metrics)


def test_report_reads_an_old_style_event_file_under_new_names(tmp_path):
    """A run logged before the renaming: band and per-head tags under their old names."""
    run_dir = tmp_path / "sweep" / "old_run"
    writer = SummaryWriter(str(run_dir))
    old = {"val/loss": 2.5, "attn/band_max/3": 0.25, "attn/band_uniform/3": 0.5,
           "attn/head_entropy/layer_0/head_0": 1.5, "attn/head_entropy/layer_1/head_1": 0.5}
    for step in (10, 20):
        for tag, value in old.items():
            writer.add_scalar(tag, value + step, step)
    writer.close()
    (row,) = report.load_runs(tmp_path / "sweep").itertuples()
    assert row.top_band_max_pct == pytest.approx(100 * 20.25) and row.top_band_uniform_pct == pytest.approx(100 * 20.5)
    (log,) = report.read_runs(tmp_path / "sweep")
    assert isinstance(log.scalars[board.band_tag("max", 3)], pd.Series)
    np.testing.assert_array_equal(figures.head_entropy([log]), [[21.5, np.nan], [np.nan, 20.5]])


def load_screenshot_script():
    spec = importlib.util.spec_from_file_location("tensorboard_screenshots", ROOT / "scripts" / "tensorboard_screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (apt-get install chromium; CI installs it)")
def test_screenshot_script_renders_every_view_with_its_cards(fit_dir, tmp_path):
    """TensorBoard in headless Chromium over the fit: each view shows its cards and becomes a PNG."""
    script = load_screenshot_script()
    pages = script.capture(fit_dir.parent, tmp_path)
    for name, view in script.VIEWS.items():
        missing = [text for text in view.expected if text not in pages[name]]
        assert not missing, (name, missing)
        with Image.open(tmp_path / name) as png:
            assert png.size == view.size
            assert len(png.getcolors(256) or range(257)) > 8  # drawn, not a blank page
    assert all(title in pages["custom_scalars.png"] for charts in fit_layout().values() for title in charts)
    assert board.HEATMAP_TAG in pages["heatmap.png"] and "@font-face" not in pages["heatmap.png"]
    assert "model.activation" in pages["hparams.png"] and "learnable_leaky_relu" in pages["hparams.png"]
    assert "hp_metric" not in pages["hparams.png"] and "_instantiator" not in pages["hparams.png"]
