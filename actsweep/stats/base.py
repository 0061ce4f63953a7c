"""The base of every statistics callback, and the registry of what they declare.

A statistic is one module under `actsweep/stats/` with a `Statistic` subclass: its `declaration`
(charts, report columns, HParams metrics; `actsweep.declarations`) is found by `declared()`, which
`board.py`'s layout, the HParams entry and the report read, so adding one edits no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from actsweep.declarations import Declaration, combined
from actsweep.stats.common import ArmedHooks, is_logging_step


class Statistic(Callback):
    """A statistics callback: what it shows (`declaration`), its forward hooks (registered once in
    `register`, before `torch.compile` traces the model, armed only while collecting, so that armed
    forwards run eagerly; removed at teardown) and a count of its computations."""

    declaration: ClassVar[Declaration] = Declaration()

    def __init__(self) -> None:
        self.computations = 0  # how often it computed (logging steps, validations): tests count it
        self.hooks = ArmedHooks()

    def register(self, model: nn.Module) -> None:
        """Register forward hooks on `model` through `self.hooks` (none by default)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.hooks.registered:
            self.register(pl_module.model)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.hooks.remove()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning calls no `teardown` after an exception: without this, hooks (armed ones too) outlive a crash.
        self.teardown(trainer, pl_module, "fit")

    def arm_if_logging(self, trainer: L.Trainer) -> bool:
        """Arm the hooks for this training step if Lightning logs at it; whether it did."""
        if is_logging_step(trainer):
            self.hooks.armed = "train"
        return self.hooks.armed == "train"


def statistics() -> list[type[Statistic]]:
    """Every statistic of `actsweep.stats`, each module imported, in module then definition order: the
    `Statistic` subclasses that declare what they show (bases such as `ProbeStatistic` declare nothing)."""
    found = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        module = importlib.import_module(f"actsweep.stats.{info.name}")
        found += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Statistic)
                  and v is not Statistic and "declaration" in vars(v) and v.__module__ == module.__name__]
    return found


def declared(callbacks=None) -> Declaration:
    """What the given callbacks (default: every statistic there is) declare, as one declaration."""
    kinds = statistics() if callbacks is None else [type(c) for c in callbacks if isinstance(c, Statistic)]
    return combined(kind.declaration for kind in dict.fromkeys(kinds))
