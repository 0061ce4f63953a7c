"""Published numbers of the two seed studies, each with where it comes from.

The report puts them beside ours in the row of the configuration they describe: an entry matches
a configuration when every key of its `match` has the same value in that configuration's overrides
(grid values plus the sweep's `fixed`). Values are the studies' own, unconverted: the blog's val loss
is a natural-log cross-entropy of its character-level model (see DESIGN.md), ReLU's Revival's ppl is
GPT-2 (12L/768d) at T=128 on CodeParrot, and `top_band_pct` is its share of heads in [3m/4, m].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BLOG_SOURCE = ("blog 'ReLU vs GELU', table 2.1, seeds/000: a character-level model (its code), 5000 steps "
               "(10k at lr 1e-4)")
REVIVAL_SOURCE = "Jha & Reagen, ReLU's Revival (arXiv 2410.09637), GPT-2 on CodeParrot, DESIGN.md"
REVIVAL_BANDS_SOURCE = "Jha & Reagen, ReLU's Revival, entropy bands of LN-free models, seeds/003"


@dataclass(frozen=True)
class Published:
    """One published cell: the configuration it describes, its numbers and its source."""

    match: dict[str, Any]
    values: dict[str, Any]
    source: str


def _blog(lr: float, activation: str, val_loss: float, inactive: float, act_mean: float, grad_norm: float,
          status: str) -> Published:
    # The blog's "Dead %" column is the share of FFN activation outputs <= 0 on a batch (its code),
    # our `inactive_pct`; not dead units (never > 0 over the validation), which is `dead_units_pct`.
    return Published(
        {"model.lr": lr, "model.activation": activation},
        {"val_loss": val_loss, "inactive_pct": inactive, "act_mean": act_mean, "grad_norm": grad_norm, "status": status},
        BLOG_SOURCE,
    )


def _revival(norm: str, activation: str, **values: Any) -> Published:
    # The Revival code's "gelu" is HF's ACT2FN["gelu"], the exact erf GELU (model_utils.py L265-266).
    return Published({"model.norm": norm, "model.activation": activation}, values, REVIVAL_SOURCE
                     if "ppl" in values else REVIVAL_BANDS_SOURCE)


STUDIES: dict[str, list[Published]] = {
    "blog": [
        _blog(1e-4, "relu", 1.12, 59.0, 0.19, 0.60, "Stable"),
        _blog(1e-4, "gelu", 1.13, 60.5, 0.07, 0.57, "Stable"),
        _blog(1e-3, "relu", 0.87, 92.1, 0.08, 0.32, "High Sparsity"),
        _blog(1e-3, "gelu", 0.85, 90.4, 0.04, 0.31, "Optimal"),
        _blog(3e-3, "relu", 1.68, 88.8, 0.70, 2.14, "Unstable"),
        _blog(3e-3, "gelu", 1.09, 94.0, 0.16, 0.29, "Robust"),
    ],
    "revival": [
        _revival("layernorm", "gelu", ppl=2.688),  # SM+LN+G
        _revival("layernorm", "relu", ppl=2.757),  # SM+LN+R
        _revival("none", "gelu", ppl=3.197),  # SM+G
        _revival("none", "relu", ppl=2.936),  # SM+R
        _revival("none", "gelu", top_band_pct=58.0),
        _revival("none", "relu", top_band_pct=23.0),
    ],
}


def same_value(a: Any, b: Any) -> bool:
    """Equal, with numbers compared as floats (YAML may give `1e-3` as a string or a float)."""
    try:
        return abs(float(a) - float(b)) <= 1e-12 * max(abs(float(a)), abs(float(b)), 1.0)
    except (TypeError, ValueError):
        return a == b


def published_for(study: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """All published values of `study` whose `match` fits `overrides`, merged, plus their sources."""
    if study is None:
        return {}
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)}")
    found: dict[str, Any] = {}
    sources: list[str] = []
    for entry in STUDIES[study]:
        if all(key in overrides and same_value(overrides[key], value) for key, value in entry.match.items()):
            found.update(entry.values)
            sources.append(entry.source)
    if found:
        found["source"] = "; ".join(dict.fromkeys(sources))
    return found
