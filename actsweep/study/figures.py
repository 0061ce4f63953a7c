"""The report's figures: training and validation loss curves, entropy bands, per-head entropy heatmaps, slopes.

Each `plot_*` takes the runs grouped by configuration and a path, and says whether it drew anything.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from actsweep.board import HEAD_ENTROPY, band_tag  # noqa: E402
from actsweep.io import write_atomic  # noqa: E402
from actsweep.study.claims import METHOD_NAMES  # noqa: E402
from actsweep.study.intervals import t_interval  # noqa: E402
from actsweep.study.logs import RunLog  # noqa: E402
from actsweep.study.outcomes import smoothed_train_loss  # noqa: E402
from actsweep.study.review_text import row_name  # noqa: E402

# The quarters of [0, reference] each panel of the band figure counts heads in: the paper's
# reference is the largest head entropy m of the model, the other the uniform causal head's ln(T!)/T.
BAND_PANELS = {
    "max": ("relative to the largest head entropy m (paper)", "m"),
    "uniform": ("relative to U = ln(T!)/T, the uniform causal head", "U"),
}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def band_labels(symbol: str) -> list[str]:
    """`[0, m/4)`, `[m/4, m/2)`, `[m/2, 3m/4)`, `[3m/4, m]` for the panel's reference symbol."""
    return [f"[0, {symbol}/4)", f"[{symbol}/4, {symbol}/2)", f"[{symbol}/2, 3{symbol}/4)", f"[3{symbol}/4, {symbol}]"]


def styles(names: list[str]) -> dict[str, dict[str, object]]:
    """A colour and a marker per configuration, no two alike for up to 20: tab20's ten dark shades,
    then its ten light ones (a cycle of 10 would repeat colours across a 12-configuration study),
    each with its own marker."""
    palette = plt.get_cmap("tab20").colors
    colours = [palette[2 * k] for k in range(10)] + [palette[2 * k + 1] for k in range(10)]
    return {name: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}
            for i, name in enumerate(names)}


def legend_outside(fig: plt.Figure, axes: list[plt.Axes]) -> None:
    """One legend for the figure, right of the panels, so that it covers none of them."""
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)


def save_png(fig: plt.Figure, path: Path, dpi: int, **savefig: Any) -> None:
    """Render in memory, then write atomically: a full disk leaves the old figure, never half a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig)
    write_atomic(path, buffer.getvalue())


def by_config(logs: list[RunLog]) -> dict[str, list[RunLog]]:
    groups: dict[str, list[RunLog]] = {}
    for log in logs:
        groups.setdefault(log.info.get("label") or log.info["config"], []).append(log)
    return groups


def finished_only(groups: dict[str, list[RunLog]]) -> dict[str, list[RunLog]]:
    """The groups with their finished runs only, empty groups left out: a diverged or unfinished run's
    last values are not results (and a NaN share or an overflowed loss would blank or flatten a panel)."""
    kept = {name: [log for log in logs if log.status.get("status") == "finished"] for name, logs in groups.items()}
    return {name: logs for name, logs in kept.items() if logs}


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


def bands_figure(groups: dict[str, list[RunLog]]) -> plt.Figure | None:
    """Share of heads per entropy band at the last probe (mean over finished seeds), like the paper's
    histograms, one panel per band definition: a marker per configuration, its own colour and shape,
    joined across the bands, each configuration slightly offset so that equal shares stay visible."""
    measured = {name: logs for name, logs in finished_only(groups).items()
                if any(band_tag("max", 3) in log.scalars for log in logs)}
    if not measured:
        return None
    style = styles(list(measured))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    offsets = np.linspace(-0.25, 0.25, len(measured)) if len(measured) > 1 else [0.0]
    for ax, (kind, (title, symbol)) in zip(axes, BAND_PANELS.items()):
        for offset, (name, logs) in zip(offsets, measured.items()):
            shares = [last_mean(logs, band_tag(kind, b)) * 100 for b in range(4)]
            ax.plot(np.arange(4) + offset, shares, lw=0.8, ms=5, label=f"{name} (n={len(logs)})", **style[name])
        ax.set_xticks(np.arange(4), band_labels(symbol))
        ax.set_xlabel(f"entropy band (quarters of [0, {symbol}])")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% of heads (mean over seeds)")
    legend_outside(fig, list(axes))
    return fig


def save_figure(fig: plt.Figure | None, path: Path) -> bool:
    """Save a drawn figure (its outside legend included) and close it; False for no figure."""
    if fig is None:
        return False
    save_png(fig, path, 110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_bands(groups: dict[str, list[RunLog]], path: Path) -> bool:
    return save_figure(bands_figure(groups), path)


def plot_train_loss(groups: dict[str, list[RunLog]], path: Path) -> bool:
    return save_figure(train_loss_figure(groups), path)


def train_loss_figure(groups: dict[str, list[RunLog]]) -> plt.Figure | None:
    """Training loss per configuration: the mean over its finished seeds of each run's smoothed curve
    (the trailing mean the Unstable rule reads), with a band from the lowest to the highest seed.
    Diverged and unfinished runs are left out (`finished_only`)."""
    curves = {}
    for name, logs in finished_only(groups).items():
        runs = [smoothed_train_loss(log.scalars["train/loss"]) for log in logs if "train/loss" in log.scalars]
        runs = [run for run in runs if len(run)]
        if runs:
            curves[name] = (pd.concat(runs, axis=1, join="inner"), len(runs))
    ranges = {name: (pd.DataFrame({"mean": frame.mean(axis=1), "low": frame.min(axis=1), "high": frame.max(axis=1)}), n)
              for name, (frame, n) in curves.items()}
    return band_figure(ranges, "train loss (smoothed): mean over seeds, band: their range")


def band_figure(curves: dict[str, tuple[pd.DataFrame, int]], ylabel: str) -> plt.Figure | None:
    """One line per label (its `mean` over steps, n seeds in the legend) with a band from `low` to
    `high`, a colour and marker each, the legend right of the axes; None for no curves."""
    if not curves:
        return None
    style = styles(list(curves))
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for label, (curve, n) in curves.items():
        colour, marker = style[label]["color"], style[label]["marker"]
        ax.plot(curve.index, curve["mean"], color=colour, marker=marker, markevery=max(1, len(curve) // 6), ms=4,
                lw=1.2, label=f"{label} (n={n})")
        ax.fill_between(curve.index, curve["low"], curve["high"], color=colour, alpha=0.15, lw=0)
    ax.set(xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    legend_outside(fig, [ax])
    return fig


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
    save_png(fig, path, 110)
    plt.close(fig)
    return True


def plot_slopes(groups: dict[str, list[RunLog]], path: Path) -> bool:
    return save_figure(slopes_figure(groups), path)


def slopes_figure(groups: dict[str, list[RunLog]]) -> plt.Figure | None:
    """Learnable slopes per configuration and tag (`slope/global`, `slope/layer_i` or its `/mean`):
    the mean over finished seeds at each step they share, with its 95 % t-interval as a band (is a
    slope's fall from its start resolved?). None when no run learned a slope."""
    curves = {}
    for name, logs in finished_only(groups).items():
        tags = sorted(t for t in logs[0].scalars if t.startswith("slope/") and not t.endswith("/std"))
        for tag in tags:
            series = [log.scalars[tag] for log in logs if tag in log.scalars]
            curves[f"{name} {tag.removeprefix('slope/')}"] = (interval_curve(pd.concat(series, axis=1, join="inner")),
                                                              len(series))
    return band_figure(curves, "learnable slope: mean over seeds, band: 95 % t-interval")


def interval_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row (step) of a steps × seeds frame: the mean and its 95 % Student-t interval (NaN for one seed)."""
    rows = [t_interval(values) for values in frame.to_numpy().tolist()]
    return pd.DataFrame({"mean": [r.mean for r in rows], "low": [r.low for r in rows], "high": [r.high for r in rows]},
                        index=frame.index)


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
        save_png(fig, path, 110)
    plt.close(fig)
    return drawn


FIGURES = {
    "train_loss.png": ("Training loss", plot_train_loss),
    "val_loss.png": ("Validation loss", plot_val_loss),
    "entropy_bands.png": ("Attention entropy bands (last probe)", plot_bands),
    "head_entropy.png": ("Per-head attention entropy (last probe)", plot_heatmaps),
    "slopes.png": ("Learnable slopes", plot_slopes),
}


# -- the forest plot of the adjusted table ----------------------------------------------------------


def forest_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The rows a forest plot shows: the primary comparisons (all rows where none is primary), each
    followed by its sensitivity row."""
    if claims.empty:
        return claims
    primary = claims[claims.primary.astype(bool)] if claims.primary.astype(bool).any() else claims
    return primary[primary.p.notna() | (primary.kind != "comparison")]


def per_seed_values(text: str) -> list[float]:
    """The values of a `per_seed` cell, `0: +0.088, 1: -0.113`."""
    return [float(part.split(":")[1]) for part in text.split(",") if ":" in part] if isinstance(text, str) else []


def plot_forest(claims: pd.DataFrame, path: Path) -> bool:
    fig = forest_figure(claims)
    if fig is None:
        return False
    save_png(fig, path, 120)
    plt.close(fig)
    return True


def forest_figure(claims: pd.DataFrame) -> plt.Figure | None:
    """Every primary comparison as a row: the mean difference, its raw 95 % interval (thin) and its
    adjusted interval (thick), the per-seed differences (dots); one panel per metric, zero marked.
    Rows whose adjusted claim resolves are drawn dark, the others grey; sensitivity rows (the same
    comparison without its flagged seeds, named as in the claims table) are hollow."""
    rows = forest_rows(claims)
    if rows.empty:
        return None
    metrics = list(dict.fromkeys(rows.metric))
    heights = [max((rows.metric == m).sum(), 1) for m in metrics]
    longest = max(len(f"{r.comparison} | {r.at}") for r in rows.itertuples())
    width = 5.5 + 0.065 * longest  # room for the row labels, and ~5.5 inches left for the data
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 0.34 * sum(heights) + 1.2 + 0.5 * len(metrics)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        here = rows[rows.metric == metric].reset_index(drop=True)
        y = np.arange(len(here))[::-1]
        for yi, r in zip(y, here.itertuples()):
            resolved = r.claim not in ("unresolved", "untestable")
            colour = "#1b4f8a" if resolved else "#7a7a7a"
            ax.plot([r.low, r.high], [yi, yi], color=colour, lw=1, alpha=0.8)
            ax.plot([r.adj_low, r.adj_high], [yi, yi], color=colour, lw=3.5, alpha=0.45, solid_capstyle="butt")
            ax.scatter(per_seed_values(r.per_seed), [yi - 0.22] * len(per_seed_values(r.per_seed)), s=9,
                       color="#c0392b", zorder=3, linewidths=0)
            ax.scatter([r.mean], [yi], s=30, zorder=4, color=colour if r.kind == "comparison" else "white",
                       edgecolors=colour, marker="D" if r.kind == "comparison" else "o")
        labels = [f"{r.comparison} | {r.at}" if r.kind == "comparison" else f"   {row_name(r)}"
                  for r in here.itertuples()]
        ax.set_yticks(y, labels, fontsize=6.5)
        ax.axvline(0, color="black", lw=0.7)
        ax.set_ylim(-0.7, len(here) - 0.4)
        ax.set_xlabel(f"mean paired difference a − b of {metric}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    method = METHOD_NAMES[rows.method.iloc[0]]
    handles = [plt.Line2D([], [], color="#7a7a7a", lw=1, label="95 % interval (raw)"),
               plt.Line2D([], [], color="#7a7a7a", lw=3.5, alpha=0.45, label=f"adjusted interval ({method})"),
               plt.Line2D([], [], color="#1b4f8a", marker="D", ls="", label="mean: claim survives adjustment"),
               plt.Line2D([], [], color="#7a7a7a", marker="D", ls="", label="mean: unresolved"),
               plt.Line2D([], [], color="#7a7a7a", marker="o", mfc="white", ls="", label="mean without its flagged seeds"),
               plt.Line2D([], [], color="#c0392b", marker="o", ms=3, ls="", label="per-seed differences")]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=7, frameon=False)  # above the panels
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / fig.get_figheight()))
    return fig
