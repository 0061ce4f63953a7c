"""Plumbing shared by the statistics callbacks: when to work, how to reduce, how to log.

Every statistic follows one rule: work only on the steps where Lightning itself logs scalars, keep
everything on the device until then, reduce across processes with one collective, and cross to the
host with one transfer per callback and step.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Mapping

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from actsweep.model.hooks import select

_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning logs scalars at this step; the only training steps on which statistics work.

    Under gradient accumulation only the last micro-batch of a logging step counts, so statistics
    run (and transfer) once per logged step, not once per micro-batch.

    Private: Lightning has no public "does this step log?" (its rule: step + 1 a multiple of
    `log_every_n_steps`, or stopping). tests/test_lightning_api.py checks it against what is logged."""
    return trainer._logger_connector.should_update_logs and not is_accumulating(trainer)


def is_accumulating(trainer: L.Trainer) -> bool:
    """Whether this training batch is a micro-batch before the optimizer step (gradient accumulation).

    Private: no public equivalent (it also knows the epoch's last batch and strategies that accumulate
    themselves); tests/test_lightning_api.py checks it on a real accumulating fit."""
    return trainer.fit_loop._should_accumulate()


def logger_step(trainer: L.Trainer) -> int:
    """The x-axis value Lightning gives this step's scalars, so our tags line up with `train/loss`.

    Private: `global_step` moves in the middle of a step (after the optimizer), this does not; no public
    name holds it. tests/test_lightning_api.py checks that statistics land at `train/loss`'s steps."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def layer_index(name: str) -> int:
    """Layer number of a dotted module or parameter name such as `blocks.3.mlp.hook_act`."""
    match = re.match(r"blocks\.(\d+)\.", name)
    if match is None:
        raise ValueError(f"{name!r} is not inside `blocks.<i>`")
    return int(match.group(1))


def count_dtype(device: torch.device) -> torch.dtype:
    """Float64 keeps token counts exact far beyond 2**24; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce over the default process group (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
    return tensor


def reduce_sums(*parts: torch.Tensor) -> list[torch.Tensor]:
    """Sum several tensors across processes with ONE collective; returns them in their shapes."""
    flat = all_reduce_(torch.cat([p.reshape(-1).to(parts[0].dtype) for p in parts]))
    return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in parts]), parts)]


def per_layer(tag: str, values: torch.Tensor, mean: bool = True) -> dict[str, torch.Tensor]:
    """`{tag}/layer_{i}` for each layer's value and, with `mean`, `{tag}` for the mean over layers."""
    tags = {f"{tag}/layer_{i}": v for i, v in enumerate(values)}
    return {tag: values.mean(), **tags} if mean else tags


def publish(trainer: L.Trainer, metrics: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Move a callback's scalars to the host in ONE transfer, put them in `trainer.callback_metrics`
    (so `EarlyStopping` or `ModelCheckpoint` can monitor any statistic) and write them to every logger
    at the step of `train/loss`.

    Host tensors, so Lightning needs no sync of its own per metric. Every process logs (a monitor needs
    the value on each; the values are already reduced). The loggers get the values straight from here,
    not through `self.log`: Lightning would write a step value again, stale, at every later logging
    step until it is logged anew, and statistics are not logged on every step."""
    if not metrics:
        return {}
    values = torch.stack([v.detach().reshape(()).float() for v in metrics.values()]).cpu()
    # Into the (public, mutable) callback_metrics dict directly: `log_dict` costs ~1 ms of Python per
    # metric (Lightning moves each one's accumulator to the device), 3-4% of a quickstart step.
    trainer.callback_metrics.update(zip(metrics, values.unbind()))
    scalars = dict(zip(metrics, values.tolist()))
    if trainer.is_global_zero:
        step = logger_step(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
    return scalars


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the first TensorBoard logger on rank 0, for images and histograms; else None."""
    if not trainer.is_global_zero:
        return None
    return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


_ARMED: dict[int, "ArmedHooks"] = {}  # the ArmedHooks now armed in this process, by id


def eager_if_armed(model: nn.Module):
    """A context that runs the forward of `model` it wraps eagerly while an `ArmedHooks` on one of
    `model`'s modules is armed (`torch.compiler.set_stance("force_eager")` for that call only:
    compiled code elsewhere in the process, other models' forwards even while their own hooks are
    armed, and this model's unarmed forwards keep their graphs)."""
    armed = _ARMED and any(hooks.hooks_into(model) for hooks in _ARMED.values())
    return torch.compiler.set_stance("force_eager") if armed else contextlib.nullcontext()


class ArmedHooks:
    """Forward hooks registered once (before `torch.compile` traces the model) whose bodies return at
    once unless armed, so that steps without statistics pay one attribute check per hook point.

    The forwards that collect statistics (logging steps, validation, the probe) run eagerly: the
    model's callers wrap them in `eager_if_armed()`, so a compiled model keeps the graphs of a plain
    compiled fit instead of recompiling for each armed state (and never reaches Dynamo's recompile
    limit, past which it would silently run eager for good)."""

    def __init__(self) -> None:
        self._armed: str | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._points: list[nn.Module] = []  # the modules hooked, so a forward knows whether it is armed

    @property
    def armed(self) -> str | None:
        """What the hooks are collecting for (e.g. "train", "val"), or None."""
        return self._armed

    @armed.setter
    def armed(self, purpose: str | None) -> None:
        self._armed = purpose
        if purpose:
            _ARMED[id(self)] = self
        else:
            _ARMED.pop(id(self), None)

    def hooks_into(self, model: nn.Module) -> bool:
        """Whether any of these hooks sits on `model` or one of its modules."""
        hooked = {id(point) for point in self._points}
        return any(id(module) in hooked for module in model.modules())

    def register(self, model: nn.Module, pattern: str, fn: Callable[[torch.Tensor, int], None]) -> None:
        """Call `fn(output.detach(), layer)` at every hook point matching `pattern` while armed."""
        for name, point in select(model, pattern).items():
            self._handles.append(point.register_forward_hook(self._body(fn, layer_index(name))))
            self._points.append(point)

    def register_input(self, module: nn.Module, fn: Callable[[nn.Module, torch.Tensor], None]) -> None:
        """Call `fn(module, input.detach())` on every forward of `module` while armed (statistics
        of what enters a layer, e.g. a dynamic norm's saturation)."""
        def hook(mod: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            if self._armed:
                fn(mod, inputs[0].detach())

        self._handles.append(module.register_forward_hook(hook))
        self._points.append(module)

    def _body(self, fn: Callable[[torch.Tensor, int], None], layer: int):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self._armed:
                fn(output.detach(), layer)

        return hook

    @property
    def registered(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._points.clear()
        self.armed = None
