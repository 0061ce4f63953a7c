"""`actsweep report DIR`: a sweep's runs as a table like the blog's 2.1, a CSV and figures.

Reads each run folder of DIR (`run.json` from the sweep runner, `status.json`, the TensorBoard event
files) and writes `report.md`, `results.csv` (one row per run) and PNG figures into DIR.
`load_runs(DIR)` gives the same per-run table to a notebook.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from actsweep.board import HEAD_ENTROPY, band_tag  # noqa: E402
from actsweep.study.published import published_for  # noqa: E402
from actsweep.status import read_status  # noqa: E402
from actsweep.study.sweep import short, short_keys  # noqa: E402
from actsweep.study.logs import event_files, read_scalars  # noqa: E402

# Final (last logged) value of each tag, and the factor that turns a share into a percentage.
FINAL = {
    "val_loss": ("val/loss", 1), "val_ppl": ("val/ppl", 1), "train_loss": ("train/loss", 1),
    "inactive_pct": ("ffn/inactive_frac", 100), "dead_units_pct": ("ffn/dead_units", 100),
    "act_mean": ("ffn/act_mean", 1), "grad_norm": ("grad/norm", 1),
    "top_band_max_pct": (band_tag("max", 3), 100), "top_band_uniform_pct": (band_tag("uniform", 3), 100),
    "tokens_per_sec": ("perf/tokens_per_sec", 1),
}
SPIKE_AFTER, SPIKE_FACTOR, END_FACTOR = 0.10, 1.5, 1.10
UNSTABLE_RULE = (
    f"A run is **Unstable** when its final val loss exceeds its best val loss by more than "
    f"{END_FACTOR - 1:.0%}, or when, after the first {SPIKE_AFTER:.0%} of its steps, a logged train loss "
    f"exceeds {SPIKE_FACTOR}× the lowest train loss logged before it (a spike). A run is **Diverged** when "
    "its training loss or any validation loss became non-finite (the run stops there and is not retried). "
    "A configuration is Diverged if "
    "any seed diverged, else Incomplete if any seed did not finish, else Unstable if any seed is unstable, "
    "else Stable. Val loss and ppl: mean ± sample std (ddof=1) over the seeds that finished (Stable or Unstable), n = "
    "their number (±— when n = 1); other columns: mean over the same seeds of the last logged value."
)
BANDS = ["[0, m/4)", "[m/4, m/2)", "[m/2, 3m/4)", "[3m/4, m]"]


@dataclass
class RunLog:
    """Everything the report knows about one run folder."""

    dir: Path
    info: dict[str, Any]  # run.json: name, config, overrides, seed, label, fixed, study
    status: dict[str, Any]
    scalars: dict[str, pd.Series]


def read_runs(sweep_dir: str | Path) -> list[RunLog]:
    """Run folders of a sweep (those with event files or a status), in the sweep's order."""
    logs = []
    for run_dir in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir()):
        if not event_files(run_dir) and read_status(run_dir) is None:
            continue
        info_file = run_dir / "run.json"
        info = json.loads(info_file.read_text()) if info_file.is_file() else {
            "name": run_dir.name, "config": run_dir.name, "overrides": {}, "seed": None}
        logs.append(RunLog(run_dir, info, read_status(run_dir) or {}, read_scalars(run_dir)))
    return sorted(logs, key=lambda log: log.info.get("index", 0))


def final_slope(scalars: dict[str, pd.Series]) -> float:
    """`slope/global`, else the mean over layers of the last per-layer (or per-neuron mean) slope."""
    if "slope/global" in scalars:
        return float(scalars["slope/global"].iloc[-1])
    layers = [s.iloc[-1] for tag, s in scalars.items()
              if tag.startswith("slope/layer_") and (tag.count("/") == 1 or tag.endswith("/mean"))]
    return float(np.mean(layers)) if layers else math.nan


def unstable_reason(scalars: dict[str, pd.Series]) -> str:
    """Why a run counts as Unstable under `UNSTABLE_RULE`; empty when it does not."""
    val = scalars.get("val/loss")
    if val is not None and len(val) and val.iloc[-1] > END_FACTOR * val.min():
        return f"final val loss {val.iloc[-1]:.3f} > {END_FACTOR} × best {val.min():.3f}"
    train = scalars.get("train/loss")
    if train is not None and len(train) > 1:
        before = train.cummin().shift(1)
        late = train.index >= SPIKE_AFTER * train.index.max()
        spikes = train[late & (train > SPIKE_FACTOR * before).to_numpy()]
        if len(spikes):
            return f"train loss spike to {spikes.iloc[0]:.3f} at step {spikes.index[0]}"
    return ""


def run_outcome(log: RunLog) -> tuple[str, str]:
    """(Stable | Unstable | Diverged | Crashed | Interrupted | Running | Unknown, reason)."""
    status, reason = log.status.get("status", "unknown"), log.status.get("reason", "")
    # Any non-finite validation (even one followed by finite ones) or a non-finite last train loss.
    losses = [*log.scalars.get("val/loss", []), *log.scalars.get("train/loss", [])[-1:]]
    if status == "diverged" or not all(map(math.isfinite, losses)):
        return "Diverged", reason or "non-finite loss"
    if status != "finished":
        return status.capitalize(), reason
    why = unstable_reason(log.scalars)
    return ("Unstable", why) if why else ("Stable", "")


def runs_table(logs: list[RunLog]) -> pd.DataFrame:
    """One row per run: grid values (dotted keys), seed, outcome, final metrics."""
    rows = []
    for log in logs:
        outcome, reason = run_outcome(log)
        row = {"run": log.info["name"], "config": log.info["config"], "label": log.info.get("label"),
               **log.info["overrides"], "seed": log.info["seed"], "status": outcome, "reason": reason,
               "step": max((int(s.index.max()) for s in log.scalars.values() if len(s)), default=None)}
        for column, (tag, factor) in FINAL.items():
            row[column] = float(log.scalars[tag].iloc[-1]) * factor if tag in log.scalars else math.nan
        val = log.scalars.get("val/loss")
        row["best_val_loss"] = float(val.min()) if val is not None else math.nan
        row["slope"] = final_slope(log.scalars)
        rows.append(row)
    return pd.DataFrame(rows)


def load_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """The per-run table of a sweep folder (what `results.csv` holds), for notebooks."""
    return runs_table(read_runs(sweep_dir))


def config_status(outcomes: pd.Series) -> str:
    """A configuration's status from its seeds' outcomes, as `UNSTABLE_RULE` says."""
    n = len(outcomes)
    for name, hit in (("Diverged", outcomes == "Diverged"), ("Incomplete", ~outcomes.isin(["Stable", "Unstable"])),
                      ("Unstable", outcomes == "Unstable")):
        if hit.any():
            return f"{name} ({hit.sum()}/{n})"
    return "Stable"


def summarize(runs: pd.DataFrame, logs: list[RunLog]) -> pd.DataFrame:
    """One row per configuration (seeds aggregated), in sweep order, with published numbers beside."""
    info = {log.info["config"]: log.info for log in logs}
    rows = []
    for config, group in runs.groupby("config", sort=False):
        kept = group[group.status.isin(["Stable", "Unstable"])]  # finished seeds only
        row: dict[str, Any] = {"config": config, "label": group.label.iloc[0], "n": int(kept.val_loss.notna().sum())}
        for column in ("val_loss", "val_ppl"):
            values = kept[column].dropna().to_numpy()
            row[f"{column}_mean"] = values.mean() if len(values) else math.nan
            row[f"{column}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        for column in ("inactive_pct", "dead_units_pct", "act_mean", "grad_norm", "top_band_max_pct",
                       "top_band_uniform_pct", "slope"):
            row[column] = kept[column].mean() if kept[column].notna().any() else math.nan
        row["status"] = config_status(group.status)
        run_info = info[config]
        published = published_for(run_info.get("study"), {**run_info.get("fixed", {}), **run_info["overrides"]})
        row.update({f"pub_{k}": v for k, v in published.items()})
        rows.append({**run_info["overrides"], **row})
    return pd.DataFrame(rows)


# -- the markdown table ----------------------------------------------------------------------------


def fmt(value: Any, digits: int) -> str:
    """A number with `digits` decimals, text as is, blank for missing, `inf` for an overflow."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, (float, int, np.number)) else str(value)


def mean_std(row: pd.Series, column: str, digits: int) -> str:
    mean, std = row[f"{column}_mean"], row[f"{column}_std"]
    return f"{mean:.{digits}f} ± {fmt(std, digits) or '—'}" if math.isfinite(mean) else ""


def grid_value(value: Any) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "" if missing else short(value)


# header, summary column (None: always shown), formatter. Optional columns appear when any row has data.
COLUMNS: list[tuple[str, str | None, Callable[[pd.Series], str]]] = [
    ("label", "label", lambda r: fmt(r["label"], 0)),
    ("n", None, lambda r: str(r["n"])),
    ("val loss", None, lambda r: mean_std(r, "val_loss", 3)),
    ("ppl", None, lambda r: mean_std(r, "val_ppl", 2)),
    ("inactive %", "inactive_pct", lambda r: fmt(r["inactive_pct"], 1)),
    ("dead units %", "dead_units_pct", lambda r: fmt(r["dead_units_pct"], 1)),
    ("act mean", "act_mean", lambda r: fmt(r["act_mean"], 3)),
    ("grad norm", "grad_norm", lambda r: fmt(r["grad_norm"], 2)),
    ("top-band heads % (max)", "top_band_max_pct", lambda r: fmt(r["top_band_max_pct"], 0)),
    ("top-band heads % (ln(T!)/T)", "top_band_uniform_pct", lambda r: fmt(r["top_band_uniform_pct"], 0)),
    ("slope", "slope", lambda r: fmt(r["slope"], 4)),
    ("status", None, lambda r: r["status"]),
] + [
    (header, key, lambda r, key=key, digits=digits: fmt(r.get(key), digits))
    for header, key, digits in [
        ("published val loss", "pub_val_loss", 2), ("published ppl", "pub_ppl", 3),
        ("published dead %", "pub_dead_pct", 1), ("published act mean", "pub_act_mean", 2),
        ("published grad norm", "pub_grad_norm", 2), ("published top-band %", "pub_top_band_pct", 0),
        ("published status", "pub_status", 0),
    ]
]


def markdown_table(summary: pd.DataFrame, grid_keys: list[str]) -> str:
    """Rows = grid values (e.g. lr × activation × norm), columns = ours, then the published numbers."""
    names = short_keys(grid_keys)
    columns = [(names[k], lambda r, k=k: grid_value(r.get(k))) for k in grid_keys]
    columns += [(h, f) for h, key, f in COLUMNS if key is None or (key in summary and summary[key].notna().any())]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f(row) for _, f in columns) + " |" for _, row in summary.iterrows()]
    return "\n".join(lines)


# -- figures ---------------------------------------------------------------------------------------


def by_config(logs: list[RunLog]) -> dict[str, list[RunLog]]:
    groups: dict[str, list[RunLog]] = {}
    for log in logs:
        groups.setdefault(log.info.get("label") or log.info["config"], []).append(log)
    return groups


def mean_curve(logs: list[RunLog], tag: str) -> pd.DataFrame | None:
    """Mean and std over seeds of a tag, on the steps the seeds share."""
    series = [log.scalars[tag] for log in logs if tag in log.scalars]
    if not series:
        return None
    frame = pd.concat(series, axis=1, join="inner")
    return pd.DataFrame({"mean": frame.mean(axis=1), "std": frame.std(axis=1, ddof=1).fillna(0.0)})


def plot_val_loss(groups: dict[str, list[RunLog]], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, logs in groups.items():
        curve = mean_curve(logs, "val/loss")
        if curve is None:
            continue
        ax.plot(curve.index, curve["mean"], marker=".", label=f"{name} (n={len(logs)})")
        ax.fill_between(curve.index, curve["mean"] - curve["std"], curve["mean"] + curve["std"], alpha=0.2)
    return save(fig, ax, path, "step", "val loss (mean ± std over seeds)")


def plot_bands(groups: dict[str, list[RunLog]], path: Path) -> bool:
    """Share of heads per entropy band, like the paper's histograms, under both definitions."""
    measured = {name: logs for name, logs in groups.items() if any(band_tag("max", 3) in log.scalars for log in logs)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / max(len(measured), 1)
    for ax, (kind, title) in zip(axes, [("max", "relative to the largest head entropy m (paper)"),
                                        ("uniform", "relative to ln(T!)/T (uniform ceiling)")]):
        for i, (name, logs) in enumerate(measured.items()):
            shares = [last_mean(logs, band_tag(kind, b)) * 100 for b in range(4)]
            ax.bar(np.arange(4) + i * width, shares, width, label=name)
        ax.set_xticks(np.arange(4) + width * (len(measured) - 1) / 2, BANDS)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("% of heads")
    return save(fig, axes[-1], path, "entropy band", None)


def plot_heatmaps(groups: dict[str, list[RunLog]], path: Path) -> bool:
    """Per-head entropy (layers × heads) at the last probe, mean over seeds, one panel per config."""
    maps = {name: head_entropy(logs) for name, logs in groups.items()}
    maps = {name: m for name, m in maps.items() if m is not None}
    if not maps:
        return False
    fig, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps) + 1.5, 3.4), squeeze=False, layout="constrained")
    vmax = max(np.nanmax(m) for m in maps.values())
    for ax, (name, grid) in zip(axes[0], maps.items()):
        image = ax.imshow(grid, vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set(xlabel="head", xticks=range(grid.shape[1]), yticks=range(grid.shape[0]))
        ax.set_title(name, fontsize=8)
    axes[0, 0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), label="entropy (nats)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_slopes(groups: dict[str, list[RunLog]], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, logs in groups.items():
        tags = sorted(t for t in logs[0].scalars if t.startswith("slope/") and not t.endswith("/std"))
        for tag in tags:
            curve = mean_curve(logs, tag)
            ax.plot(curve.index, curve["mean"], label=f"{name} {tag.removeprefix('slope/')}")
    return save(fig, ax, path, "step", "learnable slope (mean over seeds)")


def last_mean(logs: list[RunLog], tag: str) -> float:
    values = [log.scalars[tag].iloc[-1] for log in logs if tag in log.scalars]
    return float(np.mean(values)) if values else 0.0


def head_entropy(logs: list[RunLog]) -> np.ndarray | None:
    """(layers, heads) of the last per-head entropy (`attn_heads/entropy/layer_i/head_j`), mean over seeds."""
    cells = {}
    for tag in logs[0].scalars:
        match = HEAD_ENTROPY.fullmatch(tag)
        if match:
            cells[int(match[1]), int(match[2])] = last_mean(logs, tag)
    if not cells:
        return None
    grid = np.full((max(i for i, _ in cells) + 1, max(j for _, j in cells) + 1), np.nan)
    for (i, j), value in cells.items():
        grid[i, j] = value
    return grid


def save(fig: plt.Figure, ax: plt.Axes, path: Path, xlabel: str, ylabel: str | None) -> bool:
    """Save a figure if anything was drawn on it; figures without data are left out."""
    drawn = any(a.has_data() for a in fig.axes)
    if drawn:
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


FIGURES = {
    "val_loss.png": ("Validation loss", plot_val_loss),
    "entropy_bands.png": ("Attention entropy bands (last probe)", plot_bands),
    "head_entropy.png": ("Per-head attention entropy (last probe)", plot_heatmaps),
    "slopes.png": ("Learnable slopes", plot_slopes),
}


# -- the report ------------------------------------------------------------------------------------


def write_report(sweep_dir: str | Path) -> Path:
    """Write report.md, results.csv and the figures into `sweep_dir`; returns report.md's path."""
    sweep_dir = Path(sweep_dir)
    logs = read_runs(sweep_dir)
    if not logs:
        raise FileNotFoundError(f"{sweep_dir} has no run folders (event files or status.json)")
    runs = runs_table(logs)
    runs.to_csv(sweep_dir / "results.csv", index=False)
    grid_keys = list(dict.fromkeys(k for log in logs for k in log.info["overrides"]))
    summary = summarize(runs, logs)
    lines = [f"# Sweep `{sweep_dir.name}`", "",
             f"{len(runs)} runs; " + ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items()) + ".",
             "", markdown_table(summary, grid_keys), "", UNSTABLE_RULE, ""]
    sources = summary["pub_source"].dropna().unique() if "pub_source" in summary else []
    lines += [f"Published numbers: {s}." for s in sources] + ([""] if len(sources) else [])
    odd = runs[~runs.status.isin(["Stable"])]
    if len(odd):
        lines += ["Runs that are not Stable:", ""]
        lines += [f"- `{r.run}`: {r.status}{f' — {r.reason}' if r.reason else ''}" for r in odd.itertuples()]
        lines.append("")
    groups = by_config(logs)
    for name, (title, plot) in FIGURES.items():
        if plot(groups, sweep_dir / name):
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    (sweep_dir / "report.md").write_text("\n".join(lines))
    return sweep_dir / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actsweep report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a sweep's folder, e.g. lightning_logs/sweeps/quickstart")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.sweep_dir))
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"actsweep report: error: {err}", file=sys.stderr)
        return 2
    return 0
