"""What a statistic shows, declared once beside its callback: its charts in TensorBoard's Custom
Scalars tab, its columns in the report, its metrics in the HParams tab.

`board.py` builds the Custom Scalars layout and the HParams metric list from these, and
`study/report.py` its `results.csv` and table columns, so a new statistic is one file under
`actsweep/stats/` (a `Statistic` with a `declaration`) and nothing else edited. No torch or
Lightning here: `actsweep report` reads the declarations too.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYER = r"layer_\d+"  # the per-layer part of a tag, in a chart's regular expressions


@dataclass(frozen=True)
class Chart:
    """One Custom Scalars chart: every tag matching one of `tags` (regular expressions) on it."""

    category: str
    title: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Column:
    """A `results.csv` column: the last logged value of `tag`, times `scale` (100: a share as %).

    `header` is its heading in the report's configuration table (the mean over finished seeds, shown
    with `digits` decimals, where any row has a value); `place` orders the table's columns."""

    name: str
    tag: str
    header: str
    digits: int
    place: int
    scale: float = 1

    def __post_init__(self) -> None:
        if self.scale not in (1, 100):
            raise ValueError(f"column {self.name!r}: scale {self.scale} is neither 1 (as logged) nor 100 (a share as %)")


@dataclass(frozen=True)
class Declaration:
    """Everything a statistic shows besides its scalars. `hparams`: (place, tag) of the final values
    the HParams tab lists, ordered by place across statistics (TensorBoard shows the first five)."""

    charts: tuple[Chart, ...] = ()
    columns: tuple[Column, ...] = ()
    hparams: tuple[tuple[int, str], ...] = ()

    def __add__(self, other: Declaration) -> Declaration:
        return Declaration(self.charts + other.charts, self.columns + other.columns, self.hparams + other.hparams)


def combined(declarations) -> Declaration:
    """One declaration of several, checked: no column or chart declared twice."""
    total = sum(declarations, Declaration())
    for kind, names in (("column", [c.name for c in total.columns]),
                        ("chart", [(c.category, c.title) for c in total.charts])):
        twice = sorted({n for n in names if names.count(n) > 1}, key=str)
        if twice:
            raise ValueError(f"{kind} declared twice: {twice}")
    return total
