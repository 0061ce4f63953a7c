"""The LightningModule: next-token loss, AdamW parameter groups, learning-rate schedule, logging.

Its constructor arguments are flat so that the CLI reaches them as `--model.activation`,
`--model.norm`, `--model.lr`; the architectural ones become a validated `GPTConfig`.
"""

from __future__ import annotations

import dataclasses
import os

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric

from actsweep.model.activations import is_slope
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.train.schedules import build_schedule


class ActSweepModule(L.LightningModule):
    def __init__(
        self,
        vocab_size: int = 50257,
        block_size: int = 128,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        mlp_hidden: int | None = None,
        activation: str | list[str] = "gelu",
        slope_scope: str = "layer",
        slope_init: float = 0.01,
        leaky_slope: float = 0.01,
        norm: str = "layernorm",
        final_norm: str = "layernorm",
        norm_eps: float = 1e-5,
        bias: str = "all",
        sdpa_backend: str = "auto",
        dropout: float = 0.0,
        tie_weights: bool = True,
        init_std: float = 0.02,
        pad_vocab_multiple: int = 1,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        slope_weight_decay: float = 0.0,
        schedule: str = "cosine",
        warmup: float = 0.0,
        min_lr_ratio: float = 0.0,
        compile: bool = False,
    ) -> None:
        """Architecture arguments are those of `GPTConfig`. Optimizer: AdamW with `weight_decay` on
        weights of two or more dimensions, none on biases and norms, `slope_weight_decay` on learnable
        slopes (ReLU's Revival decayed them: 0.1). Schedule: `cosine` | `linear` | `constant` after a
        linear warmup of `warmup` steps (or that fraction of the run when below 1), decaying to
        `min_lr_ratio` × `lr`. `compile` compiles the model in place after statistics hooks exist."""
        super().__init__()
        self.save_hyperparameters()
        fields = {f.name for f in dataclasses.fields(GPTConfig) if f.init}
        self.config = GPTConfig(**{k: v for k, v in self.hparams.items() if k in fields})
        self.model = GPT(self.config)
        self.val_loss_sum, self.val_tokens = SumMetric(), SumMetric()

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
        self.val_loss_sum.update(self.loss(batch, reduction="sum"))
        self.val_tokens.update(batch[1].numel())

    def _log_evaluation(self, stage: str) -> None:
        loss = self.val_loss_sum.compute() / self.val_tokens.compute()
        self.val_loss_sum.reset()
        self.val_tokens.reset()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False)
        self.log(f"{stage}/ppl", loss.exp(), sync_dist=False)

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
