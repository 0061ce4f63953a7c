"""Tokens per second and model FLOP utilisation, with no device sync beyond the logging steps'.

Lightning's `ThroughputMonitor` calls `torch.cuda.synchronize` every step. Here the clock is read on
logging steps only, after waiting for the device there: logging steps sync anyway (Lightning turns
`train/loss` into a float), so that wait costs nothing, and the wall time between two logging steps
is the device's time for the steps in between. Validation time between them is left out.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops

from actsweep.declarations import Column, Declaration
from actsweep.stats.base import Statistic
from actsweep.stats.common import is_logging_step, publish
from actsweep.stats.metrics import model_flops_utilisation, tokens_per_second


def compute_dtype(precision: str) -> torch.dtype | str:
    """The dtype matmuls run in under a Lightning `precision` flag, as `get_available_flops` takes it
    (from the public flag, not Lightning's private `_plugin_to_compute_dtype`)."""
    if precision == "transformer-engine":
        return torch.int8  # fp8 kernels: Lightning counts them at int8 peak
    for prefix, dtype in (("bf16", torch.bfloat16), ("16", torch.float16), ("64", torch.float64)):
        if precision.startswith(prefix):
            return dtype
    return torch.float32


class ThroughputMonitor(Statistic):
    """Logs `perf/tokens_per_sec` (all processes) and, where the device's peak FLOP/s is known
    (CUDA, TPU), `perf/mfu` from `pl_module.model.flops_per_token()`, on logging steps."""

    declaration = Declaration(columns=(Column("tokens_per_sec", "perf/tokens_per_sec", "", 0, place=200),),  # results.csv only
                              hparams=((120, "perf/tokens_per_sec"),))

    def __init__(self) -> None:
        super().__init__()
        self._peak_flops: float | None = None
        self._last: tuple[int, float] | None = None  # (global step, clock) at the last logging step
        self._validation_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None
        device = pl_module.device
        if device.type in ("cuda", "xla"):
            peak = get_available_flops(device, compute_dtype(trainer.precision))
            self._peak_flops = None if peak is None else float(peak) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last is not None:  # move the reference point past the validation run
            self._last = (self._last[0], self._last[1] + time.perf_counter() - self._validation_start)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not is_logging_step(trainer):
            return
        if pl_module.device.type == "cuda":  # this step's kernels belong before the clock reading
            torch.cuda.synchronize(pl_module.device)
        now, step = time.perf_counter(), trainer.global_step
        if self._last is not None and step > self._last[0]:
            self.computations += 1
            rate = tokens_per_second(step - self._last[0], trainer.accumulate_grad_batches, batch[0].numel(),
                                     trainer.world_size, now - self._last[1])
            metrics = {"perf/tokens_per_sec": torch.tensor(rate)}
            if self._peak_flops:
                mfu = model_flops_utilisation(rate, pl_module.model.flops_per_token(), self._peak_flops)
                metrics["perf/mfu"] = torch.tensor(mfu)
            publish(trainer, metrics)
        self._last = (step, now)
