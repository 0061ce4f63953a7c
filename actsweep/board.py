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


# Final values shown as metrics in TensorBoard's HParams tab (those a run logged).
HPARAMS_METRICS = (
    "val/loss", "val/ppl", "train/loss", "ffn/inactive_frac", "ffn/dead_units", "ffn/act_mean", "grad/norm",
    "attn/entropy", band_tag("max", 3), band_tag("uniform", 3), "slope/global", "perf/tokens_per_sec",
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
}


# -- the HParams entry -------------------------------------------------------------------------------

HPARAMS_SUFFIX = ".hparams"  # the entry's own event file in the run's folder: one per run


def hparams_value(value: Any) -> int | float | str | bool:
    """A setting as TensorBoard's HParams tab takes it: numbers, text and booleans as they are,
    anything else (a tuple of betas, None) as its JSON text."""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)


def has_hparams(run_dir: str | Path) -> bool:
    return any(Path(run_dir).glob(f"*{HPARAMS_SUFFIX}"))


def write_hparams(run_dir: str | Path, params: Mapping[str, Any], logged_tags: Iterable[str]) -> bool:
    """Write the run's HParams entry once: `params` against the `HPARAMS_METRICS` the run logged.

    TensorBoard shows each metric's last logged value from the run's own scalars, so only names are
    written. Returns False (and writes nothing) when the run already has its entry."""
    if has_hparams(run_dir):
        return False
    from torch.utils.tensorboard.summary import hparams
    from torch.utils.tensorboard.writer import FileWriter

    logged = set(logged_tags)
    metrics = {tag: 0.0 for tag in HPARAMS_METRICS if tag in logged}
    writer = FileWriter(str(run_dir), filename_suffix=HPARAMS_SUFFIX)
    for summary in hparams({k: hparams_value(v) for k, v in params.items()}, metrics):
        writer.add_summary(summary)
    writer.close()
    return True
