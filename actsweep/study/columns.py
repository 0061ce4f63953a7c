"""The report's columns of logged values, from what the training module and every statistic declare
(`actsweep.declarations`): a new statistic's column needs no edit here."""

from __future__ import annotations

from functools import cache

from actsweep.declarations import Column, Declaration, combined


@cache
def every_declaration() -> Declaration:
    """The training module's declaration and every statistic's (imports Lightning: call it late)."""
    from actsweep.stats.base import declared
    from actsweep.train.module import ActSweepModule

    return combined([ActSweepModule.declaration, declared()])


def final_columns() -> list[Column]:
    """Every declared column, in its place: `results.csv` holds each tag's last value × scale."""
    return sorted(every_declaration().columns, key=lambda c: c.place)


def table_columns() -> list[Column]:
    """The declared columns the configuration table shows (those with a header), in place order."""
    return [c for c in final_columns() if c.header]
