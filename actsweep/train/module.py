"""The LightningModule: next-token loss, AdamW parameter groups, learning-rate schedule, logging.

Its constructor takes the optimizer's settings and passes everything else to `GPTConfig`, which
holds every architectural default once: the CLI reads both (jsonargparse follows the `**architecture`
into `GPTConfig`), so `--model.activation`, `--model.norm` and `--model.lr` sit side by side and a new
`GPTConfig` field is an option with no edit here.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric

from actsweep.model.activations import is_slope
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.errors import ConfigError
from actsweep.stats.common import count_dtype
from actsweep.train.schedules import build_schedule, check_schedule


def check_optimizer_settings(lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                             slope_weight_decay: float, schedule: str, warmup: float, min_lr_ratio: float) -> None:
    """Refuse, before anything is built or written, settings that AdamW or the schedule would reject
    mid-run or silently train with (lr 0, a negative decay)."""
    named = {"lr": lr, "eps": eps, "weight_decay": weight_decay, "slope_weight_decay": slope_weight_decay,
             "warmup": warmup, "min_lr_ratio": min_lr_ratio}
    for name, value in [*named.items(), ("betas", betas[0]), ("betas", betas[1])]:
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}")
    if lr <= 0 or eps <= 0:
        raise ConfigError(f"lr and eps must be positive, got lr={lr}, eps={eps}")
    if not all(0 <= beta < 1 for beta in betas):
        raise ConfigError(f"betas must both lie in [0, 1), got {tuple(betas)}")
    for name in ("weight_decay", "slope_weight_decay", "warmup"):
        if named[name] < 0:
            raise ConfigError(f"{name} must be >= 0, got {named[name]}")
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    check_schedule(schedule)


EVAL_SUMS = ("loss", "tokens", "nonfinite")  # summed over an evaluation's batches and processes


def evaluation_loss(loss_sum: torch.Tensor, tokens: torch.Tensor, nonfinite_batches: torch.Tensor) -> torch.Tensor:
    """Mean loss per token of an evaluation; NaN when any batch's loss was NaN or infinite, so a
    diverged model never reads as a (good) finite loss."""
    return torch.where(nonfinite_batches > 0, torch.nan, loss_sum / tokens)


class ActSweepModule(L.LightningModule):
    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        slope_weight_decay: float = 0.0,
        schedule: str = "cosine",
        warmup: float = 0.0,
        min_lr_ratio: float = 0.0,
        compile: bool = False,
        **architecture: Any,
    ) -> None:
        """The model and its training.

        Args:
            lr: peak learning rate of AdamW.
            betas: AdamW's (beta1, beta2).
            eps: AdamW's epsilon.
            weight_decay: decay of weights with two or more dimensions; biases and norms get none.
            slope_weight_decay: decay of learnable leaky-ReLU slopes (ReLU's Revival decayed them: 0.1).
            schedule: ``cosine`` | ``linear`` | ``constant`` after a linear warmup, to ``min_lr_ratio`` × ``lr``.
            warmup: warmup steps, or that fraction of the run when below 1.
            min_lr_ratio: the schedule's final learning rate as a fraction of ``lr``.
            compile: ``torch.compile`` the model in place, after the statistics hooks exist.
            **architecture: the fields of :class:`~actsweep.model.gpt.GPTConfig` (``activation``,
                ``norm``, ``n_layer``, ...), each with its default and help there: one place for both.
        """
        super().__init__()
        check_optimizer_settings(lr, betas, eps, weight_decay, slope_weight_decay, schedule, warmup, min_lr_ratio)
        self.save_hyperparameters()
        self.config = GPTConfig(**architecture)
        self.model = GPT(self.config)
        # `disable`: a NaN batch must reach the sum (SumMetric's default drops it while the token count
        # keeps its tokens, so a diverged evaluation read as a low loss).
        self.eval_sums = torch.nn.ModuleDict({key: SumMetric(nan_strategy="disable") for key in EVAL_SUMS})

    def setup(self, stage: str) -> None:
        # Float64 sums stay exact over any evaluation set (float32 where the device has no float64).
        for metric in self.eval_sums.values():
            metric.set_dtype(count_dtype(self.trainer.strategy.root_device))

    def configure_model(self) -> None:
        # Runs after callbacks' `setup`, so hooks they registered are traced into the graph.
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile()
            self._compiled = True

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction=reduction)

    def on_fit_start(self) -> None:
        # `seed_everything` exports its seed; unseeded runs keep torch's own (random) one.
        self._dropout_seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def on_train_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Reseed torch from (seed, batch index, rank): dropout masks, like the training windows, are a
        pure function of the step, so a resumed run draws exactly the masks of an uninterrupted one
        (Lightning's checkpoints hold no RNG state) and each DDP rank draws its own."""
        if self.config.dropout == 0:  # nothing random in the step
            return
        accumulate = self.trainer.accumulate_grad_batches
        index = self.trainer.global_step * accumulate + batch_idx % accumulate
        state = np.random.SeedSequence([self._dropout_seed, index, self.global_rank]).generate_state(1, np.uint64)
        torch.manual_seed(int(state[0]))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        # No prog_bar: Lightning would turn it into a float (a host sync) after every step;
        # `actsweep.progress.LossProgressBar` shows it on refresh instead.
        self.log("train/loss", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Stopping through `should_stop` makes Lightning validate once more, so every run ends with
        # a validation loss even when max_steps is not a multiple of val_check_interval.
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        # Token-weighted sums, reduced across processes at compute(): exact under DDP sharding.
        loss_sum = self.loss(batch, reduction="sum")
        self.eval_sums["loss"].update(loss_sum)
        self.eval_sums["tokens"].update(batch[1].numel())
        self.eval_sums["nonfinite"].update(~loss_sum.isfinite())

    def _log_evaluation(self, stage: str) -> None:
        sums = {key: metric.compute() for key, metric in self.eval_sums.items()}
        for metric in self.eval_sums.values():
            metric.reset()
        loss = evaluation_loss(sums["loss"], sums["tokens"], sums["nonfinite"])
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False)
        self.log(f"{stage}/ppl", loss.exp(), sync_dist=False)
        self.log(f"{stage}/nonfinite_batches", sums["nonfinite"], sync_dist=False)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def parameter_groups(self) -> list[dict]:
        hp = self.hparams
        groups: dict[str, dict] = {
            "decay": {"params": [], "weight_decay": hp.weight_decay},
            "no_decay": {"params": [], "weight_decay": 0.0},
            "slopes": {"params": [], "weight_decay": hp.slope_weight_decay},
        }
        for name, p in self.model.named_parameters():
            key = "slopes" if is_slope(name) else "decay" if p.dim() >= 2 else "no_decay"
            groups[key]["params"].append(p)
        return [dict(g, name=k) for k, g in groups.items() if g["params"]]

    def configure_optimizers(self):
        hp = self.hparams
        fused = self.device.type == "cuda"  # one kernel for the whole update
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=hp.lr, betas=hp.betas, eps=hp.eps, fused=fused)
        multiplier = build_schedule(hp.schedule, self.trainer.max_steps, hp.warmup, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
