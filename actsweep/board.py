"""What a run shows in TensorBoard besides its scalars, in one place: the tag names the callbacks
write (and what earlier versions wrote), the Custom Scalars layout, and the HParams entry.

TensorBoard's Scalars tab groups tags by their first path part (`attn`, `ffn`, `grad`, ...), one
card per tag; the Custom Scalars tab puts every layer of a statistic on one chart (`LAYOUT`); the
HParams tab lists each run's settings against its final metrics (`write_hparams`).
No Lightning here, so that `actsweep sweep` and `actsweep report` start quickly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

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


# Final values shown as metrics in TensorBoard's HParams tab (those a run logged); it shows the first
# five by default.
HPARAMS_METRICS = (
    "val/loss", "val/ppl", "ffn/dead_units", "attn/entropy", band_tag("uniform", 3), "train/loss", "ffn/inactive_frac",
    "ffn/act_mean", "grad/norm", band_tag("max", 3), "slope/global", "perf/tokens_per_sec",
)

LAYER = r"layer_\d+"
# Custom Scalars tab: category -> chart title -> ["Multiline", [regular expressions of tags]].
LAYOUT = {
    "loss": {
        "train and validation loss": ["Multiline", [r"train/loss", r"val/loss"]],
        "validation perplexity": ["Multiline", [r"val/ppl"]],
    },
    "attention entropy": {
        "entropy per layer (nats; mean over heads)": ["Multiline", [rf"attn/entropy/{LAYER}"]],
        "entropy per layer as a share of ln(T!)/T": ["Multiline", [rf"attn/entropy_frac/{LAYER}"]],
        "heads in each quarter of [0, largest head entropy]": ["Multiline", [r"attn/heads_in_band/max_.*"]],
        "heads in each quarter of [0, ln(T!)/T]": ["Multiline", [r"attn/heads_in_band/uniform_.*"]],
        "largest |attention logit| per layer": ["Multiline", [rf"attn/max_logit/{LAYER}"]],
    },
    "FFN activations": {
        "inactive share per layer (outputs <= 0)": ["Multiline", [rf"ffn/inactive_frac/{LAYER}"]],
        "dead units per layer (never > 0 in validation)": ["Multiline", [rf"ffn/dead_units/{LAYER}"]],
        "activation mean per layer": ["Multiline", [rf"ffn/act_mean/{LAYER}"]],
    },
    "residual stream and gradients": {
        "residual RMS per layer": ["Multiline", [rf"resid/rms/{LAYER}"]],
        "gradient norm per block": ["Multiline", [r"grad/norm/block_\d+"]],
        "gradient norm: total, embeddings, head, slopes": ["Multiline", [r"grad/norm", r"grad/norm/(embeddings|head|slopes)"]],
    },
    "learnable slopes": {
        "slope per layer (mean over units)": ["Multiline", [r"slope/global", rf"slope/{LAYER}", rf"slope/{LAYER}/mean"]],
    },
    "normalization-free norms": {
        "saturated share per norm": ["Multiline", [r"norm/saturated/.*"]],
        "learnable scalars per norm": ["Multiline", [r"norm/(alpha|shift|beta)/.*", r"norm/embedding_scale"]],
    },
    "non-finite values": {
        "non-finite values per layer and site": ["Multiline", [rf"nonfinite/.*/{LAYER}"]],
    },
}


# -- the HParams entry -------------------------------------------------------------------------------

HPARAMS_SUFFIX = ".hparams"  # the entry's own event file in the run's folder: one per run
# The study's axes: the settings that the HParams tab shows first (marked as varying; it shows up
# to five of those); the others are a click away.
STUDY_AXES = ("model.activation", "model.norm", "model.lr", "seed")


def has_hparams(run_dir: str | Path) -> bool:
    return any(Path(run_dir).glob(f"*{HPARAMS_SUFFIX}"))


def hparams_summaries(params: Mapping[str, Any], logged_tags: Iterable[str], varied: Iterable[str] = STUDY_AXES) -> list:
    """The three summaries of an HParams entry: the experiment (settings, `varied` ones marked to be
    shown first, and the `HPARAMS_METRICS` that were logged), the session start (the values) and end.

    Settings that are None are left out; tuples and lists become their JSON text. TensorBoard shows
    each metric's last logged value from the run's own scalars, so only the names are written."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    values = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in params.items() if v is not None}
    logged = set(logged_tags)
    experiment, start, end = hparams(values, {tag: 0.0 for tag in HPARAMS_METRICS if tag in logged})
    plugin_data = experiment.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in set(varied)
    plugin_data.content = content.SerializeToString()
    return [experiment, start, end]


def write_hparams(run_dir: str | Path, params: Mapping[str, Any], logged_tags: Iterable[str],
                  varied: Iterable[str] = STUDY_AXES) -> bool:
    """Write the run's HParams entry (`hparams_summaries`) once, into its own event file in the run's
    folder; False (and nothing written) when the run has its entry already."""
    if has_hparams(run_dir):
        return False
    from torch.utils.tensorboard.writer import FileWriter

    writer = FileWriter(str(run_dir), filename_suffix=HPARAMS_SUFFIX)
    for summary in hparams_summaries(params, logged_tags, varied):
        writer.add_summary(summary)
    writer.close()
    return True
