"""The LightningModule: next-token loss, AdamW parameter groups, learning-rate schedule, logging.

Its constructor takes the optimizer's settings and passes everything else to `GPTConfig`, which
holds every architectural default once: the CLI reads both (jsonargparse follows the `**architecture`
into `GPTConfig`), so `--model.activation`, `--model.norm` and `--model.lr` sit side by side and a new
`GPTConfig` field is an option with no edit here.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from torchmetrics import SumMetric

from actsweep.declarations import Chart, Column, Declaration
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.stats.common import (all_reduce_, count_dtype, eager_if_armed, is_accumulating, is_logging_step, per_layer,
                                   publish)
from actsweep.errors import check_choice
from actsweep.train.optim import (AdamWKernel, DecayScope, OptimizerName, adamw_kernel_args, build_optimizer,
                                  check_optimizer, check_optimizer_settings, check_update_rule, parameter_groups)
from actsweep.train.schedules import ScheduleName, build_schedule


MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's values
MatmulPrecision = Literal[MATMUL_PRECISIONS]
# Summed over an evaluation's batches and processes: token losses, tokens, non-finite batches, and
# the windows' mean losses with their squares (for the sampling noise of the evaluation).
EVAL_SUMS = ("loss", "tokens", "nonfinite", "windows", "window_loss", "window_loss_sq")


def evaluation_loss(loss_sum: torch.Tensor, tokens: torch.Tensor, nonfinite_batches: torch.Tensor) -> torch.Tensor:
    """Mean loss per token of an evaluation; NaN when any batch's loss was NaN or infinite, so a
    diverged model never reads as a (good) finite loss."""
    return torch.where(nonfinite_batches > 0, torch.nan, loss_sum / tokens)


def window_standard_error(n: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean of `n` window losses from their sum and sum of squares: how much
    the evaluation's loss would move with another draw of as many windows (NaN below 2 windows)."""
    variance = (total_sq - total * total / n) / (n - 1)
    return torch.where(n > 1, variance.clamp(min=0).sqrt() / n.sqrt(), torch.nan)


def check_training_settings(settings: Mapping[str, Any]) -> None:
    """Refuse the module's own settings (its constructor's arguments, as in `hparams`) that it would refuse."""
    s = settings
    check_optimizer_settings(s["lr"], s["betas"], s["eps"], s["weight_decay"], s["slope_weight_decay"], s["schedule"],
                             s["warmup"], s["min_lr_ratio"])
    check_optimizer(s["decay_scope"], s["adamw_kernel"])
    check_update_rule(s["optimizer"], s["adamw_kernel"])
    check_choice("matmul_precision", s["matmul_precision"], MATMUL_PRECISIONS)


def checked_config(settings: Mapping[str, Any]) -> GPTConfig:
    """The `GPTConfig` of the module's settings (every constructor argument), refusing what the module
    refuses, with no weights built: the CLI and a sweep check each run with it before anything runs."""
    check_training_settings(settings)
    own = inspect.signature(ActSweepModule).parameters  # the rest are GPTConfig's fields
    return GPTConfig(**{key: value for key, value in settings.items() if key not in own})


class ActSweepModule(L.LightningModule):
    # What the module's own tags show (a statistic's are declared by its callback in `actsweep.stats`).
    declaration = Declaration(
        charts=(
            Chart("loss", "train and validation loss", (r"train/loss", r"val/loss")),
            Chart("loss", "validation perplexity", (r"val/ppl",)),
        ),
        columns=(  # val loss and ppl have their own table columns, with intervals (study/report.py)
            Column("val_loss", "val/loss", "", 3, place=1), Column("val_ppl", "val/ppl", "", 2, place=2),
            Column("train_loss", "train/loss", "", 3, place=3),
            Column("val_loss_se", "val/loss_se", "val loss SE", 4, place=120),
            Column("global_batch", "batch/global_size", "global batch", 0, place=130),
        ),
        hparams=((10, "val/loss"), (20, "val/ppl"), (60, "train/loss")),
    )

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        slope_weight_decay: float = 0.0,
        decay_scope: DecayScope = "matrices",
        decay_norm_scalars: bool = False,
        adamw_kernel: AdamWKernel = "auto",
        optimizer: OptimizerName = "adamw",
        schedule: ScheduleName = "cosine",
        warmup: float = 0.0,
        min_lr_ratio: float = 0.0,
        compile: bool = False,
        matmul_precision: MatmulPrecision = "highest",
        **architecture: Any,
    ) -> None:
        """The model and its training.

        Args:
            lr: peak learning rate of AdamW.
            betas: AdamW's (beta1, beta2).
            eps: AdamW's epsilon.
            weight_decay: AdamW's decoupled weight decay of the parameters ``decay_scope`` names.
            slope_weight_decay: decay of learnable leaky-ReLU slopes (ReLU's Revival decayed them: 0.1).
            decay_scope: ``matrices`` (tensors of two or more dimensions; biases, norms get none) |
                ``all`` (every parameter in one group, as the blog's code).
            decay_norm_scalars: weight-decay the scalars of dyt/derf/dyisru norms and the embedding
                scale (DyT's LLaMA code does; otherwise they get none, whatever ``decay_scope``).
            adamw_kernel: ``auto`` (fused on CUDA unless mixed precision clips or scales, then foreach)
                | ``fused`` | ``foreach`` | ``for_loop``; see :mod:`actsweep.train.optim`.
            optimizer: ``adamw`` (torch's) | ``adamw_hf`` (Hugging Face's update rule, ReLU's Revival's
                ``adamw_hf``: eps before the bias correction, decay after the update; see
                :mod:`actsweep.train.hf_adamw`).
            schedule: ``cosine`` | ``linear`` | ``constant`` after a linear warmup, to ``min_lr_ratio`` × ``lr``.
            warmup: warmup steps, or that fraction of the run when below 1.
            min_lr_ratio: the schedule's final learning rate as a fraction of ``lr``.
            compile: ``torch.compile`` the model in place, after the statistics hooks exist.
            matmul_precision: float32 matrix products: ``highest`` (full fp32), ``high`` (TF32 on
                Ampere or newer GPUs), ``medium`` (bf16); set for the process before the model is built.
            **architecture: the fields of :class:`~actsweep.model.gpt.GPTConfig` (``activation``,
                ``norm``, ``n_layer``, ...), each with its default and help there: one place for both.
        """
        super().__init__()
        self.save_hyperparameters()
        check_training_settings(self.hparams)
        # Process-wide, and the default otherwise depends on who set it last: every run says which.
        torch.set_float32_matmul_precision(matmul_precision)
        self.config = GPTConfig(**architecture)  # written out: jsonargparse follows it to GPTConfig's fields
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
        with eager_if_armed(self.model):
            return self.model(idx)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction=reduction)

    def on_fit_start(self) -> None:
        # `seed_everything` exports its seed; unseeded runs keep torch's own (random) one.
        self._dropout_seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def on_train_start(self) -> None:
        # After the data's checks, so a refused fit has written nothing: the effective global batch.
        trainer, processes = self.trainer, self.trainer.num_devices * self.trainer.num_nodes
        batch = getattr(trainer.datamodule, "batch_size", None)
        if batch is not None and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"batch/global_size": batch * processes * trainer.accumulate_grad_batches,
                                    "batch/processes": processes}, step=0)

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
        objective = loss if self.model.entropy_reg is None else loss + self._entropy_penalty()
        # Logged only on the steps that reach the loggers, as the mean over processes (one all-reduce):
        # `self.log` costs ~1 ms of Python per call (it moves its metric to the device each time).
        # No prog_bar: Lightning would turn it into a float (a host sync) after every step;
        # `actsweep.progress.LossProgressBar` shows it on refresh instead.
        if self._reaches_loggers():
            self.log("train/loss", loss, sync_dist=True)
        return objective

    def _entropy_penalty(self) -> torch.Tensor:
        """entropy_reg's λ-weighted penalty, added to what is minimised (`train/loss` stays the
        cross-entropy); logged as `train/entropy_reg` and, before λ, `train/entropy_reg/layer_i`."""
        penalty, layers = self.model.entropy_penalty()
        if self._reaches_loggers():
            publish(self.trainer, {"train/entropy_reg": penalty, **per_layer("train/entropy_reg", layers, mean=False)})
        return penalty

    def _reaches_loggers(self) -> bool:
        """Whether this step's scalars are written: a logging step, or the last step (Lightning logs it)."""
        last = 0 < self.trainer.max_steps <= self.global_step + 1
        return is_logging_step(self.trainer) or (last and not is_accumulating(self.trainer))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Stopping through `should_stop` makes Lightning validate once more, so every run ends with
        # a validation loss even when max_steps is not a multiple of val_check_interval.
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Adaptive attention kernels are chosen on logging steps, which cross to the host anyway; here,
        # before any checkpoint of this step is written, so a resumed run makes the same choices.
        if self.model.tracks_attention_logits and is_logging_step(self.trainer):
            peak = float(all_reduce_(self.model.logit_peaks(), "max").max())  # all processes switch together
            exact = self.model.check_attention_logits(peak)
            publish(self.trainer, {"attn/logit_bound": torch.tensor(peak), "attn/exact_kernel": torch.tensor(float(exact))})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["attention_kernels"] = self.model.attention_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "attention_kernels" in checkpoint:
            self.model.load_attention_state(checkpoint["attention_kernels"])

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        # Token-weighted sums, reduced across processes at compute(): exact under DDP sharding.
        per_token = self.loss(batch, reduction="none").view(batch[1].shape)
        loss_sum, window_loss = per_token.sum(), per_token.mean(dim=1)
        self.eval_sums["loss"].update(loss_sum)
        self.eval_sums["tokens"].update(batch[1].numel())
        self.eval_sums["nonfinite"].update(~loss_sum.isfinite())
        self.eval_sums["windows"].update(window_loss.numel())
        self.eval_sums["window_loss"].update(window_loss.sum())
        self.eval_sums["window_loss_sq"].update(window_loss.square().sum())

    def _log_evaluation(self, stage: str) -> None:
        sums = {key: metric.compute() for key, metric in self.eval_sums.items()}
        for metric in self.eval_sums.values():
            metric.reset()
        loss = evaluation_loss(sums["loss"], sums["tokens"], sums["nonfinite"])
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False)
        self.log(f"{stage}/ppl", loss.exp(), sync_dist=False)
        self.log(f"{stage}/nonfinite_batches", sums["nonfinite"], sync_dist=False)
        se = window_standard_error(sums["windows"], sums["window_loss"], sums["window_loss_sq"])
        self.log(f"{stage}/loss_se", se, sync_dist=False)

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
        return parameter_groups(self.model.named_parameters(), hp.weight_decay, hp.slope_weight_decay,
                                hp.decay_scope, hp.decay_norm_scalars)

    def configure_optimizers(self):
        hp = self.hparams
        plugin = self.trainer.precision_plugin
        kernel = adamw_kernel_args(hp.adamw_kernel, self.device.type, amp=isinstance(plugin, MixedPrecision),
                                   grad_scaler=getattr(plugin, "scaler", None) is not None,
                                   clipping=bool(self.trainer.gradient_clip_val))
        optimizer = build_optimizer(hp.optimizer, self.parameter_groups(), hp.lr, tuple(hp.betas), hp.eps, kernel)
        multiplier = build_schedule(hp.schedule, self.trainer.max_steps, hp.warmup, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
