"""Our runs against the published numbers, like with like.

- A published loss or perplexity stands beside a run only when the run used the published tokenizer
  (the blog's numbers are per character, the Revival's per code-search-net token); otherwise it reads
  `n/c` (not comparable) and the section says why.
- Values are read at the published step (the blog's table: step 5000, also for its 10k-step runs).
- The blog ran seed 1337 alone: its row stands beside our seed-1337 run and our mean [95 % CI] over seeds.
- The Revival's table has a Δ% column: perplexity relative to SM+LN+G, for theirs and ours.
- Our statuses are mapped onto the blog's categories by `BLOG_STATUS_RULE`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from actsweep.study.intervals import t_interval
from actsweep.study.logs import RunLog
from actsweep.study.markdown import table_lines
from actsweep.study.outcomes import COMPLETED, run_outcome
from actsweep.study.published import published_for

# What the published numbers were measured with.
PUBLISHED_SETTING: dict[str, dict[str, Any]] = {
    "blog": {"tokenizer": "char", "step": 5000, "seed": 1337, "metric": "val_loss", "reference": None},
    "revival": {"tokenizer": "hf:huggingface-course/code-search-net-tokenizer", "step": None, "seed": None,
                "metric": "ppl", "reference": "SM+LN+G"},
}
PER_TOKEN = ("val_loss", "ppl")  # published values that depend on the tokenizer
NOT_COMPARABLE = "n/c"
SPARSE_PCT = 90.0
BLOG_STATUS_RULE = (
    "Blog-style status (the blog's categories, from ours): **Unstable** when our configuration is Unstable or "
    "Diverged; otherwise **Optimal** for the lowest mean val loss of the sweep, **High Sparsity** for a ReLU "
    f"whose inactive share is at least {SPARSE_PCT:.0f} %, **Robust** for a configuration stable at a learning "
    "rate where another one is Unstable, else **Stable**. The rule was written to give the blog's labels on "
    "the blog's six rows (whose Unstable is one of its inputs), so that agreement holds by construction and "
    "is not evidence for the rule."
)


def run_tokenizer(run_dir: Path) -> str | None:
    """`data.tokenizer` of a run, from the config Lightning saved into its folder."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    return ((yaml.safe_load(path.read_text()) or {}).get("data") or {}).get("tokenizer")


def comparable(study: str | None, tokenizer: str | None) -> bool:
    return study in PUBLISHED_SETTING and tokenizer == PUBLISHED_SETTING[study]["tokenizer"]


def mark_incomparable(published: dict[str, Any], study: str | None, tokenizer: str | None) -> dict[str, Any]:
    """`published` with its per-token values replaced by `n/c` when the run used another tokenizer."""
    if not published or comparable(study, tokenizer):
        return published
    return {k: NOT_COMPARABLE if k in PER_TOKEN else v for k, v in published.items()}


def value_at(series: pd.Series | None, step: int | None) -> float:
    """The last value logged at or before `step` (the last one when `step` is None); NaN if none."""
    if series is None or not len(series):
        return math.nan
    kept = series if step is None else series[series.index <= step]
    return float(kept.iloc[-1]) if len(kept) else math.nan


def delta_pct(value: float, reference: float) -> float:
    return 100.0 * (value - reference) / reference


def blog_status(rows: list[dict[str, Any]]) -> list[str]:
    """The blog's status of each configuration; a row holds `status` (ours: Stable, Unstable (1/3), ...),
    `val_loss`, `inactive_pct`, `activation` and `lr`."""
    unstable = [not r["status"].startswith("Stable") for r in rows]
    stable_losses = [r["val_loss"] for r, u in zip(rows, unstable) if not u and math.isfinite(r["val_loss"])]
    best = min(stable_losses, default=math.nan)
    shaky_lrs = {r["lr"] for r, u in zip(rows, unstable) if u}
    labels = []
    for row, is_unstable in zip(rows, unstable):
        if is_unstable:
            labels.append("Unstable")
        elif row["val_loss"] == best:
            labels.append("Optimal")
        elif row["activation"] == "relu" and row["inactive_pct"] >= SPARSE_PCT:
            labels.append("High Sparsity")
        elif row["lr"] in shaky_lrs:
            labels.append("Robust")
        else:
            labels.append("Stable")
    return labels


FROM_LOSS = {"val_loss": lambda loss: loss, "ppl": math.exp}  # each published metric from our val loss


def _metric(log: RunLog, metric: str, step: int | None) -> float:
    return FROM_LOSS[metric](value_at(log.scalars.get("val/loss"), step))


def published_rows(logs: list[RunLog], summary: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration with a published value: theirs, our seed's, our mean [CI], at the step."""
    study = next((log.info.get("study") for log in logs if log.info.get("study")), None)
    if study not in PUBLISHED_SETTING or f"pub_{PUBLISHED_SETTING[study]['metric']}" not in summary:
        return pd.DataFrame()
    setting = PUBLISHED_SETTING[study]
    metric, step = setting["metric"], setting["step"]
    by_config: dict[str, list[RunLog]] = {}
    for log in logs:
        by_config.setdefault(log.info["config"], []).append(log)
    rows = []
    for _, row in summary.iterrows():
        theirs = row.get(f"pub_{metric}")
        if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
            continue
        runs = by_config[row["config"]]
        finished = [log for log in runs if run_outcome(log)[0] in COMPLETED]  # as the summary counts them
        seeded = [log for log in finished if log.info.get("seed") == setting["seed"]]
        overrides = runs[0].info["overrides"]
        raw = published_for(study, {**runs[0].info.get("fixed", {}), **overrides}).get(metric, math.nan)
        rows.append({
            "config": row["label"] if isinstance(row["label"], str) else row["config"],
            "theirs": theirs, "theirs_raw": raw, "ours_seed": _metric(seeded[0], metric, step) if seeded else math.nan,
            "ours": t_interval([_metric(log, metric, step) for log in finished]),
            "status": row["status"], "pub_status": row.get("pub_status"),
            "val_loss": t_interval([_metric(log, "val_loss", step) for log in finished]).mean,
            "inactive_pct": row.get("inactive_pct", math.nan),
            "activation": overrides.get("model.activation"), "lr": overrides.get("model.lr"),
        })
    table = pd.DataFrame(rows)
    if study == "blog":
        table["blog_status"] = blog_status(table.to_dict("records"))
    reference = table[table.config == setting["reference"]] if setting["reference"] else table.iloc[:0]
    if len(reference):
        # Their Δ% is their own table's column, within their tokenizer: shown even where `theirs` is n/c.
        ours_ref, their_ref = reference.iloc[0]["ours"].mean, reference.iloc[0]["theirs_raw"]
        table["delta_theirs"] = [delta_pct(v, their_ref) for v in table.theirs_raw]
        table["delta_ours"] = [delta_pct(i.mean, ours_ref) for i in table.ours]
    return table


def published_section(logs: list[RunLog], summary: pd.DataFrame) -> list[str]:
    """The report's "Against the published numbers" lines (none when the sweep has no study)."""
    table = published_rows(logs, summary)
    if table.empty:
        return []
    study = next(log.info["study"] for log in logs if log.info.get("study"))
    setting = PUBLISHED_SETTING[study]
    metric = "val loss" if setting["metric"] == "val_loss" else "ppl"
    at = f" at step {setting['step']}" if setting["step"] else " at the end"
    digits = 3
    columns = [("configuration", lambda r: r["config"]),
               (f"published {metric}", lambda r: r["theirs"] if isinstance(r["theirs"], str) else f"{r['theirs']:.{digits}f}")]
    if setting["seed"] is not None:
        columns.append((f"ours, seed {setting['seed']}", lambda r: f"{r['ours_seed']:.{digits}f}"))
    columns.append((f"ours, mean [95 % CI]{at}", lambda r: r["ours"].text(digits)))
    if "delta_ours" in table:
        columns += [(f"published Δ% vs {setting['reference']}", lambda r: f"{r['delta_theirs']:+.1f}"),
                    (f"ours Δ% vs {setting['reference']}", lambda r: f"{r['delta_ours']:+.1f}")]
    if "blog_status" in table:
        columns += [("published status", lambda r: str(r["pub_status"])),
                    ("ours, blog-style status", lambda r: r["blog_status"])]
    rows = ([f(r) for _, f in columns] for r in table.to_dict("records"))
    lines = ["## Against the published numbers", "", *table_lines([h for h, _ in columns], rows)]
    lines += ["", f"Published {metric} values{at}, with the {setting['tokenizer']} tokenizer; `{NOT_COMPARABLE}`: "
              "our runs used another tokenizer, so their per-token numbers measure something else."]
    if "blog_status" in table:
        lines += ["", BLOG_STATUS_RULE]
    return lines + [""]
