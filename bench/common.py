"""Shared benchmark plumbing: the machine's description, interleaved repetitions, medians, and the
sections of `bench/RESULTS.md` each script owns.

Every figure is a ratio of two arms run in one process, alternating which arm goes first from one
repetition to the next, so that load from other users of the machine falls on both alike.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line: CPU model, cores, threads torch uses, torch/lightning/Python versions."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({usable} usable, torch threads {torch.get_num_threads()}), "
        f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}"
    )


def command() -> str:
    """The command line that ran this script, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    script_name = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    return shlex.join(["python", script_name, *sys.argv[1:]])


def interleave(arms: Mapping[str, Callable[[], dict[str, float]]], reps: int) -> dict[str, dict[str, list[float]]]:
    """Run every arm `reps` times, rotating which arm goes first.

    Each arm returns {measure: value}; the result is {arm: {measure: [value per repetition]}}."""
    names = list(arms)
    results: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            for measure, value in arms[name]().items():
                results[name].setdefault(measure, []).append(value)
        print(f"rep {rep + 1}/{reps}: " + "; ".join(
            f"{n} " + ", ".join(f"{m} {v[-1]:.4g}" for m, v in results[n].items()) for n in names), flush=True)
    return results


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-repetition ratios (paired: each pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(values: list[float]) -> str:
    """`median (min–max)` with 4 significant digits."""
    return f"{statistics.median(values):.4g} ({min(values):.4g}–{max(values):.4g})"


def write_section(title: str, body: str, results: Path = RESULTS, command_line: str | None = None) -> None:
    """Replace (or append) the `## {title}` section of RESULTS.md, leaving every other section as is.

    The section gets the machine and the exact command (this script's, unless given) above `body`."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    section = f"## {title}\n\nMachine: {machine()}\n\nCommand: `{command_line or command()}`\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    results.write_text(text)
    print(f"wrote section {title!r} of {results}")
