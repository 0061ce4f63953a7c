"""What a run shows in TensorBoard besides its scalars: the tag names shared by several modules
(and what earlier versions wrote), the Custom Scalars layout and the HParams entry, both built from
what the statistics declare (`actsweep.declarations`).

TensorBoard's Scalars tab groups tags by their first path part (`attn`, `ffn`, `grad`, ...), one
card per tag; the Custom Scalars tab puts every layer of a statistic on one chart (`layout`); the
HParams tab lists each run's settings against its final metrics (`write_hparams`).
No Lightning here, so that `actsweep sweep` and `actsweep report` start quickly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from actsweep.declarations import Declaration

# Entropy bands: quarters of [0, reference], named by range and reference.
QUARTERS = ("bottom_quarter", "second_quarter", "third_quarter", "top_quarter")
BAND_REFERENCES = {
    "max": "the largest head entropy in the model (the paper's bands)",
    "uniform": "ln(T!)/T, the mean entropy of a perfectly uniform causal head",
}


def band_tag(reference: str, band: int) -> str:
    """`attn/heads_in_band/max_top_quarter`: the share of heads whose entropy is in quarter `band`
    (0 lowest) of [0, reference]."""
    if reference not in BAND_REFERENCES:
        raise ValueError(f"unknown band reference {reference!r}; choose one of {', '.join(BAND_REFERENCES)}")
    return f"attn/heads_in_band/{reference}_{QUARTERS[band]}"


def head_entropy_tag(layer: int, head: int) -> str:
    """One head's entropy: its own group, so the `attn` section keeps to per-layer and model-wide tags."""
    return f"attn_heads/entropy/layer_{layer}/head_{head}"


HEAD_ENTROPY = re.compile(r"attn_heads/entropy/layer_(\d+)/head_(\d+)")  # matches `head_entropy_tag`'s names


HEATMAP_TAG = "attn/entropy_heatmap"  # a figure: layers × heads, nats, at each probe

# What earlier versions wrote (regular expression) -> the name now; `current_tag` applies it, so
# event files of existing runs read as if written today.
RENAMED = {
    r"attn/band_(max|uniform)/([0-3])": lambda m: band_tag(m[1], int(m[2])),
    r"attn/head_entropy/layer_(\d+)/head_(\d+)": lambda m: head_entropy_tag(int(m[1]), int(m[2])),
}


def current_tag(tag: str) -> str:
    """The name a tag has now; tags that were never renamed come back unchanged."""
    for pattern, new in RENAMED.items():
        match = re.fullmatch(pattern, tag)
        if match:
            return new(match)
    return tag


def layout(declaration: Declaration) -> dict[str, dict[str, list]]:
    """The Custom Scalars layout of the declared charts: category -> chart title -> ["Multiline",
    [regular expressions of tags]], categories in the order they are first declared."""
    charts: dict[str, dict[str, list]] = {}
    for chart in declaration.charts:
        charts.setdefault(chart.category, {})[chart.title] = ["Multiline", list(chart.tags)]
    return charts


def hparams_metrics(declaration: Declaration) -> list[str]:
    """The final values shown as metrics in TensorBoard's HParams tab (those a run logged), in the
    declared places; it shows the first five by default."""
    return [tag for _, tag in sorted(declaration.hparams)]


# -- the HParams entry -------------------------------------------------------------------------------

HPARAMS_SUFFIX = ".hparams"  # the entry's own event file in the run's folder: one per run
# The study's axes: the settings that the HParams tab shows first (marked as varying; it shows up
# to five of those); the others are a click away.
STUDY_AXES = ("model.activation", "model.norm", "model.lr", "seed")


def has_hparams(run_dir: str | Path) -> bool:
    return any(Path(run_dir).glob(f"*{HPARAMS_SUFFIX}"))


def hparams_summaries(params: Mapping[str, Any], logged_tags: Iterable[str], metrics: Iterable[str],
                      varied: Iterable[str] = STUDY_AXES) -> list:
    """The three summaries of an HParams entry: the experiment (settings, `varied` ones marked to be
    shown first, and those of `metrics` that were logged), the session start (the values) and end.

    Settings that are None are left out; tuples and lists become their JSON text. TensorBoard shows
    each metric's last logged value from the run's own scalars, so only the names are written."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in params.items() if v is not None}
    logged = set(logged_tags)
    experiment, start, end = hparams(values, {tag: 0.0 for tag in metrics if tag in logged})
    plugin_data = experiment.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in set(varied)
    plugin_data.content = content.SerializeToString()
    return [experiment, start, end]


def write_hparams(run_dir: str | Path, params: Mapping[str, Any], logged_tags: Iterable[str], metrics: Iterable[str],
                  varied: Iterable[str] = STUDY_AXES) -> bool:
    """Write the run's HParams entry (`hparams_summaries`) once, into its own event file in the run's
    folder; False (and nothing written) when the run has its entry already."""
    if has_hparams(run_dir):
        return False
    from torch.utils.tensorboard.writer import FileWriter

    writer = FileWriter(str(run_dir), filename_suffix=HPARAMS_SUFFIX)
    for summary in hparams_summaries(params, logged_tags, metrics, varied):
        writer.add_summary(summary)
    writer.close()
    return True
