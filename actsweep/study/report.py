"""`actsweep report DIR`: a sweep's runs as a table like the blog's 2.1, a CSV and figures.

Reads each run folder of DIR (`run.json` from the sweep runner, `status.json`, the TensorBoard event
files) and writes `report.md`, `results.csv` (one row per run) and PNG figures into DIR.
`load_runs(DIR)` gives the same per-run table to a notebook.

`actsweep report --from-csv DIR/results.csv --sweep SWEEP.yaml` recomputes the paired and adjusted
tables (`paired.csv`, `claims.csv`, `claims.md`, `forest.png`) from a committed results.csv, with
the sweep file's comparisons, without the run folders: a finished study can be re-read without
retraining.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from actsweep.errors import ConfigError, MissingPathError, OneLineParser
from actsweep.io import write_atomic
from actsweep.study.columns import final_columns, table_columns
from actsweep.study.compare import mark_incomparable, published_section, run_tokenizer
from actsweep.study.intervals import Interval, t_interval
from actsweep.study.claims import ALPHA, METHODS
from actsweep.study.paired import HIDDEN, paired_markdown, paired_table
from actsweep.study.published import published_for
from actsweep.study.review import claims_table, outlier_runs
from actsweep.study.review_text import claims_markdown
from actsweep.study.sweep import Sweep, default_comparisons, load_sweep, short, short_keys
from actsweep.study.figures import FIGURES, by_config, plot_forest
from actsweep.study.logs import RunLog, read_runs
from actsweep.study.markdown import table_lines
from actsweep.study.outcomes import (
    COMPLETED, MAX_SKIPPED_SHARE, UNSTABLE_RULE, config_status, final_saturation, final_slope, layer_counts,
    precision_flag, per_layer_finals, run_outcome, skipped_share,
)

def runs_table(logs: list[RunLog], max_skipped_share: float = MAX_SKIPPED_SHARE) -> pd.DataFrame:
    """One row per run: grid values (dotted keys), seed, outcome, final metrics, precision flag."""
    rows, columns = [], final_columns()
    for log in logs:
        outcome, reason = run_outcome(log)
        row = {"run": log.info["name"], "config": log.info["config"], "label": log.info.get("label"),
               **log.info["overrides"], "seed": log.info["seed"], "status": outcome, "reason": reason,
               "step": max((int(s.index.max()) for s in log.scalars.values() if len(s)), default=None)}
        for column in columns:  # each declared tag's last logged value
            tag = column.tag
            row[column.name] = float(log.scalars[tag].iloc[-1]) * column.scale if tag in log.scalars else math.nan
        val = log.scalars.get("val/loss")
        row["best_val_loss"] = float(val.min()) if val is not None else math.nan
        row["slope"] = final_slope(log.scalars)
        row["saturated_pct"] = final_saturation(log.scalars) * 100
        row["skipped_pct"] = skipped_share(log.scalars) * 100
        row["flag"] = precision_flag(row["skipped_pct"] / 100, max_skipped_share)
        row.update(per_layer_finals(log.scalars))
        rows.append(row)
    return pd.DataFrame(rows)


def load_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """The per-run table of a sweep folder (what `results.csv` holds), for notebooks."""
    return runs_table(read_runs(sweep_dir))


def summarize(runs: pd.DataFrame, logs: list[RunLog]) -> pd.DataFrame:
    """One row per configuration (seeds aggregated), in sweep order, with published numbers beside."""
    info = {log.info["config"]: log.info for log in logs}
    folders = {log.info["config"]: log.dir for log in logs}
    rows = []
    for config, group in runs.groupby("config", sort=False):
        kept = group[group.status.isin(COMPLETED)]  # finished seeds only
        row: dict[str, Any] = {"config": config, "label": group.label.iloc[0], "n": int(kept.val_loss.notna().sum())}
        for column in ("val_loss", "val_ppl"):
            row[column] = t_interval(kept[column].tolist())
        for column in (*(c.name for c in table_columns()), "saturated_pct", "skipped_pct"):
            row[column] = kept[column].mean() if column in kept and kept[column].notna().any() else math.nan
        # where learnable slopes ended, with its interval: is a slope's fall from its start resolved?
        row["slope"] = t_interval(kept.slope.dropna().tolist()) if kept.slope.notna().any() else math.nan
        row["skips_by_layer"] = skips_of(kept)
        row["status"] = config_status(group.status)
        run_info = info[config]
        published = published_for(run_info.get("study"), {**run_info.get("fixed", {}), **run_info["overrides"]})
        published = mark_incomparable(published, run_info.get("study"), run_tokenizer(folders[config]))
        row.update({f"pub_{k}": v for k, v in published.items()})
        rows.append({**run_info["overrides"], **row})
    return pd.DataFrame(rows)


def skips_of(kept: pd.DataFrame) -> str | float:
    """A configuration's steps skipped for non-finite gradients, per layer, as means over its finished
    seeds (a seed that never skipped counts 0); NaN where no seed skipped any (or the policy stops)."""
    columns = [c for c in kept if c.startswith("skipped_layer_") and kept[c].notna().any()]
    if not columns:
        return math.nan
    return layer_counts({c: float(kept[c].fillna(0).mean()) for c in columns})


# -- the markdown table ----------------------------------------------------------------------------


def fmt(value: Any, digits: int) -> str:
    """A number with `digits` decimals, text as is, blank for missing, `inf` for an overflow."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, (float, int, np.number)) else str(value)




def grid_value(value: Any) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "" if missing else short(value)


# The columns the report computes itself (not a tag's last value): header, summary column, decimals,
# place among the declared columns (`study/columns.py`).
COMPUTED = [
    ("slope [95 % CI]", "slope", 4, 100), ("saturated norm inputs %", "saturated_pct", 1, 110),
    ("fp16 skipped steps %", "skipped_pct", 1, 140), ("skips by layer", "skips_by_layer", 0, 150),
]
PUBLISHED = [
    ("published val loss", "pub_val_loss", 2), ("published ppl", "pub_ppl", 3),
    ("published inactive % (blog's \"Dead %\")", "pub_inactive_pct", 1), ("published act mean", "pub_act_mean", 2),
    ("published grad norm", "pub_grad_norm", 2), ("published top-band %", "pub_top_band_pct", 0),
    ("published status", "pub_status", 0),
]


def cell(key: str, digits: int) -> Callable[[pd.Series], str]:
    """A table cell: an interval with `digits` decimals, else `fmt` of the value."""
    return lambda r: r[key].text(digits) if isinstance(r.get(key), Interval) else fmt(r.get(key), digits)


def table_columns_of() -> list[tuple[str, str | None, Callable[[pd.Series], str]]]:
    """The configuration table's columns: header, summary column (None: always shown), formatter.
    Optional columns appear when any row has data."""
    middle = sorted([(c.place, c.header, c.name, c.digits) for c in table_columns()]
                    + [(place, header, key, digits) for header, key, digits, place in COMPUTED])
    return [("label", "label", cell("label", 0)), ("n", None, lambda r: str(r["n"])),
            ("val loss [95 % CI]", None, lambda r: r["val_loss"].text(3)),
            ("ppl [95 % CI]", None, lambda r: r["val_ppl"].text(2)),
            *((header, key, cell(key, digits)) for _, header, key, digits in middle),
            ("status", None, lambda r: r["status"]),
            *((header, key, cell(key, digits)) for header, key, digits in PUBLISHED)]


def markdown_table(summary: pd.DataFrame, grid_keys: list[str]) -> str:
    """Rows = grid values (e.g. lr × activation × norm), columns = ours, then the published numbers."""
    names = short_keys(grid_keys)
    columns = [(names[k], lambda r, k=k: grid_value(r.get(k))) for k in grid_keys]
    columns += [(h, f) for h, key, f in table_columns_of() if key is None or (key in summary and summary[key].notna().any())]
    rows = ([f(row) for _, f in columns] for _, row in summary.iterrows())
    return "\n".join(table_lines([h for h, _ in columns], rows))


# -- the report ------------------------------------------------------------------------------------


def comparisons_of(logs: list[RunLog], grid_keys: list[str]) -> list[dict[str, Any]]:
    """The comparisons the sweep named (kept in each run.json), else one per grid key and value."""
    named = next((log.info["comparisons"] for log in logs if log.info.get("comparisons")), None)
    if named:
        return named
    return default_comparisons({k: [log.info["overrides"][k] for log in logs if k in log.info["overrides"]]
                                for k in grid_keys})


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Every file of the report is written whole or not at all (a full disk leaves the old one)."""
    write_atomic(path, table.to_csv(index=False).encode())


def write_claims(runs: pd.DataFrame, comparisons: list[dict[str, Any]], grid_keys: list[str], out_dir: Path,
                 method: str = "holm", alpha: float = ALPHA) -> list[str]:
    """Write `paired.csv` (raw paired differences), `claims.csv` (judged per family, with MDE, TOST and
    sensitivity rows) and `forest.png` into `out_dir`; returns the report's markdown of them."""
    paired = paired_table(runs, comparisons, grid_keys)
    write_csv(paired.drop(columns=[c for c in (*HIDDEN, "declared") if c in paired]), out_dir / "paired.csv")
    if paired.empty:
        return []
    flagged = outlier_runs(runs)
    claims = claims_table(paired, comparisons, flagged, method, alpha)
    write_csv(claims, out_dir / "claims.csv")
    lines = ["## Paired differences", "", paired_markdown(paired), ""]
    missing = list(dict.fromkeys(c["metric"] for c in comparisons if c.get("metric", "val_loss") not in runs))
    if missing:  # declared, but runs made before the statistic existed do not have it
        lines += ["Declared comparisons of metrics these runs do not have (no results.csv column, left out): "
                  + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    lines += claims_markdown(claims, flagged, alpha)
    if plot_forest(claims, out_dir / "forest.png"):
        lines += ["## Primary comparisons", "", "![Primary comparisons](forest.png)", ""]
    return lines


def grid_cell(value: Any) -> Any:
    """A grid value as results.csv wrote it, back as the run had it: `['relu', 'gelu']` is a list."""
    if isinstance(value, str) and value.startswith("["):
        return ast.literal_eval(value)
    return value


def runs_from_csv(path: str | Path, grid_keys: list[str]) -> pd.DataFrame:
    """results.csv as `runs_table` made it. Only empty cells are missing: `none` or `null` are values."""
    runs = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for key in (k for k in grid_keys if k in runs):
        runs[key] = runs[key].map(grid_cell)
    return runs


def csv_inputs(csv: str | Path, sweep: Sweep) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """A committed results.csv read with its sweep: the runs, the comparisons (the sweep's, else the
    defaults) and the grid keys."""
    grid_keys = list(dict.fromkeys(k for part in sweep.grid for k in part))
    runs = runs_from_csv(csv, grid_keys)
    comparisons = sweep.comparisons or default_comparisons(
        {k: [v for v in runs[k] if isinstance(v, list) or not pd.isna(v)] for k in grid_keys if k in runs})
    return runs, comparisons, grid_keys


def grid_keys_of(logs: list[RunLog]) -> list[str]:
    """The grid keys of a sweep's runs, in sweep order (a grid may be a union: every run's keys)."""
    return list(dict.fromkeys(k for log in logs for k in log.info["overrides"]))


# report.md's block of paired and adjusted tables, which `--from-csv` recomputes in place
CLAIMS_BEGIN, CLAIMS_END = "<!-- claims: recomputed by actsweep report --from-csv -->", "<!-- claims: end -->"


def claims_block(claims: list[str]) -> list[str]:
    return [CLAIMS_BEGIN, "", *claims, CLAIMS_END, ""]


def with_claims(report: str, claims: list[str]) -> str:
    """`report` (a report.md) with its claims block replaced by `claims`, the rest unchanged."""
    head, rest = report.split(CLAIMS_BEGIN, 1)
    _, tail = rest.split(CLAIMS_END, 1)
    return head + "\n".join(claims_block(claims)).removesuffix("\n") + tail


def report_from_csv(csv: str | Path, sweep_file: str | Path, out_dir: str | Path | None = None,
                    method: str = "holm", alpha: float = ALPHA) -> Path:
    """The paired and adjusted tables, the forest plot and `claims.md` of a committed results.csv,
    with the comparisons of `sweep_file` (its grid gives the keys); written beside the CSV unless
    `out_dir` is given, where a report.md's claims block (between `CLAIMS_BEGIN` and `CLAIMS_END`) is
    rewritten too, so that the sweep's report and its recomputed tables never disagree. Returns
    claims.md's path."""
    csv = Path(csv)
    out_dir = Path(out_dir) if out_dir else csv.parent
    sweep = load_sweep(sweep_file)  # refused before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, comparisons, grid_keys = csv_inputs(csv, sweep)
    command = f"actsweep report --from-csv {csv} --sweep {sweep_file}" + (f" --adjust {method}" if method != "holm" else "")
    lines = [f"# Sweep `{sweep.name}`: paired and adjusted comparisons", "",
             f"Recomputed from `{csv.name}` ({len(runs)} runs) with the comparisons of `{sweep_file}`:", "",
             f"```bash\n{command}\n```", ""]
    claims = write_claims(runs, comparisons, grid_keys, out_dir, method, alpha)
    write_atomic(out_dir / "claims.md", "\n".join(lines + claims).encode())
    report = out_dir / "report.md"
    if report.is_file() and CLAIMS_BEGIN in (text := report.read_text()):
        write_atomic(report, with_claims(text, claims).encode())
    return out_dir / "claims.md"


def placement(logs: list[RunLog]) -> list[str]:
    """How the local launcher placed the runs, as their run.json recorded it: the jobs that shared each
    device and the devices used. It explains the runs' times; their numbers do not depend on it."""
    shares = sorted({log.info["runs_per_device"] for log in logs if "runs_per_device" in log.info})
    if not shares:  # runs from SLURM, by hand, or from before placement was recorded
        return []
    devices = sorted({device for log in logs for device in log.info.get("devices", [])})
    where = f"devices {', '.join(devices)}" if devices else "CPUs only"
    return [f"Placement: runs_per_device {', '.join(map(str, shares))} on {where}, "
            "each run on CPUs of its own.", ""]


def write_report(sweep_dir: str | Path, max_skipped_share: float = MAX_SKIPPED_SHARE,
                 comparisons: list[dict[str, Any]] | None = None, method: str = "holm") -> Path:
    """Write report.md, results.csv and the figures into `sweep_dir`; returns report.md's path.
    `comparisons` (the sweep file's, when `actsweep sweep` reports) win over those the runs recorded,
    so that a comparison added to a finished sweep needs no rerun."""
    sweep_dir = Path(sweep_dir)
    logs = read_runs(sweep_dir)
    if not logs:
        raise MissingPathError(f"{sweep_dir} has no run folders (event files or status.json); give a sweep's "
                               "folder, e.g. lightning_logs/sweeps/quickstart")
    runs = runs_table(logs, max_skipped_share)
    write_csv(runs, sweep_dir / "results.csv")
    grid_keys = grid_keys_of(logs)
    summary = summarize(runs, logs)
    lines = [f"# Sweep `{sweep_dir.name}`", "",
             f"{len(runs)} runs; " + ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items()) + ".",
             "", *placement(logs), markdown_table(summary, grid_keys), "", UNSTABLE_RULE, ""]
    lines += claims_block(write_claims(runs, comparisons or comparisons_of(logs, grid_keys), grid_keys, sweep_dir, method))
    sources = summary["pub_source"].dropna().unique() if "pub_source" in summary else []
    lines += [f"Published numbers: {s}." for s in sources] + ([""] if len(sources) else [])
    lines += published_section(logs, summary)
    odd = runs[~runs.status.isin(["Stable"])]
    if len(odd):
        lines += ["Runs that are not Stable:", ""]
        lines += [f"- `{r.run}`: {r.status}{f' — {r.reason}' if r.reason else ''}" for r in odd.itertuples()]
        lines.append("")
    flagged = runs[runs.flag != ""]
    if len(flagged):
        lines += ["Runs flagged:", ""] + [f"- `{r.run}`: {r.flag}" for r in flagged.itertuples()] + [""]
    groups = by_config([log for log in logs if not log.unreadable])  # no curves to draw
    for name, (title, plot) in FIGURES.items():
        if plot(groups, sweep_dir / name):
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    write_atomic(sweep_dir / "report.md", "\n".join(lines).encode())
    return sweep_dir / "report.md"


def main(argv: list[str] | None = None) -> int:
    """`actsweep report`; bad input raises an `ActSweepError`, which `actsweep.cli` prints as one line."""
    parser = OneLineParser(prog="actsweep report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="a sweep's folder, e.g. lightning_logs/sweeps/quickstart")
    parser.add_argument("--from-csv", type=Path, metavar="CSV",
                        help="recompute the paired and adjusted tables from a results.csv (no run folders needed)")
    parser.add_argument("--sweep", type=Path, metavar="SWEEP", help="with --from-csv: the sweep file")
    parser.add_argument("--out", type=Path, metavar="DIR", help="with --from-csv: where to write (default: the CSV's folder)")
    parser.add_argument("--adjust", choices=list(METHODS), default="holm",
                        help="correction within each family of comparisons (default holm; bh: Benjamini–Hochberg)")
    parser.add_argument("--max-skipped-share", type=float, default=MAX_SKIPPED_SHARE, metavar="SHARE",
                        help="flag fp16 runs whose GradScaler skipped more than this share of optimizer "
                             f"steps (default {MAX_SKIPPED_SHARE})")
    args = parser.parse_args(argv)
    if (args.from_csv is None) == (args.sweep_dir is None) or (args.from_csv is not None) != (args.sweep is not None):
        parser.error("give a sweep folder, or --from-csv CSV with --sweep SWEEP")
    if not 0 <= args.max_skipped_share <= 1:
        raise ConfigError(f"--max-skipped-share is a share in [0, 1], got {args.max_skipped_share}")
    if args.from_csv:
        if not args.from_csv.is_file():
            raise MissingPathError(f"{args.from_csv} is not a file; give a sweep's results.csv")
        print(report_from_csv(args.from_csv, args.sweep, args.out, args.adjust))
        return 0
    if not args.sweep_dir.is_dir():
        what = "is not a folder" if args.sweep_dir.exists() else "does not exist"
        raise MissingPathError(f"{args.sweep_dir} {what}; give a sweep's folder, e.g. lightning_logs/sweeps/quickstart")
    print(write_report(args.sweep_dir, args.max_skipped_share, method=args.adjust))
    return 0
