"""Training tokens/s of the real `actsweep fit` path against a bare PyTorch loop.

Both arms are built by the same `ActSweepCLI` from `configs/quickstart.yaml` (plus size overrides),
so they share the model (same seed, same weights), the data module's batches (`train_batch(step)`)
and the optimizer (`configure_optimizers`: the same AdamW parameter groups and LambdaLR schedule).
The Lightning arm runs `trainer.fit` with quickstart.yaml's logger and callbacks, checkpointing off,
the progress bar refreshing every `log_every_n_steps`, and its statistics callbacks off (`lightning`)
or on (`lightning+stats`); the bare arm is
`loss.backward(); opt.step(); sched.step(); opt.zero_grad()`. Warmup steps are excluded: each arm is
timed from the end of step `warmup` to the end of step `warmup + steps`.

    python bench/train_throughput.py                      # both sizes, statistics off and on
    python bench/train_throughput.py --sizes quickstart --reps 7
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import yaml
from common import ROOT, interleave, median_ratio, spread, write_section

from actsweep.train.cli import ActSweepCLI
from actsweep.data.module import TextDataModule
from actsweep.train.module import ActSweepModule

QUICKSTART = ROOT / "configs" / "quickstart.yaml"
# name -> (CLI overrides of quickstart.yaml, warmup steps, timed steps); each window holds a logging step
SIZES: dict[str, tuple[list[str], int, int]] = {
    "quickstart": ([], 3, 30),
    "blog": ([
        "--model.n_layer=6", "--model.n_head=6", "--model.n_embd=384", "--model.pad_vocab_multiple=64",
        "--data.tokenizer=gpt2", "--data.batch_size=8", "--trainer.log_every_n_steps=5",
    ], 2, 5),
}
def clocks() -> tuple[float, float]:
    """(wall clock, CPU time of this process: all its threads)."""
    return time.perf_counter(), time.process_time()


def rates(tokens: int, start: tuple[float, float], stop: tuple[float, float]) -> dict[str, float]:
    """Tokens per wall second and per CPU second (the latter barely moves when others load the CPUs)."""
    return {"wall": tokens / (stop[0] - start[0]), "cpu": tokens / (stop[1] - start[1])}


class StepClock(L.Callback):
    """`clocks()` at the end of optimizer steps `start` and `stop` (after the optimizer step)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.times: dict[int, tuple[float, float]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step in (self.start, self.stop):
            self.times[trainer.global_step] = clocks()


class Bench:
    """One model size: builds both arms through the CLI and times them."""

    def __init__(self, overrides: list[str], warmup: int, steps: int, log_dir: str,
                 val_check_interval: int | None = None) -> None:
        """`val_check_interval=None`: no validation (the bare loop has none); else validate that often."""
        self.warmup, self.steps, self.overrides = warmup, steps, overrides
        config = yaml.safe_load(QUICKSTART.read_text())
        trainer = config["trainer"]
        trainer.update(enable_checkpointing=False, max_steps=warmup + steps)
        if val_check_interval is None:
            trainer["limit_val_batches"] = 0
        else:
            trainer["val_check_interval"] = val_check_interval
        trainer["logger"]["init_args"]["save_dir"] = log_dir
        callbacks = [cb for cb in trainer["callbacks"] if "ModelCheckpoint" not in cb["class_path"]]
        for cb in callbacks:  # a progress bar refreshing no more often than Lightning logs
            if "ProgressBar" in cb["class_path"]:
                cb.setdefault("init_args", {})["refresh_rate"] = trainer["log_every_n_steps"]
        self.statistics = [cb["class_path"] for cb in callbacks if cb["class_path"].startswith("actsweep.stats.")]
        self.configs = {}
        for statistics in (False, True):
            trainer["callbacks"] = [cb for cb in callbacks if statistics or cb["class_path"] not in self.statistics]
            self.configs[statistics] = Path(log_dir) / f"bench-statistics-{statistics}.yaml"
            self.configs[statistics].write_text(yaml.safe_dump(config))

    def cli(self, statistics: bool = False) -> ActSweepCLI:
        return ActSweepCLI(ActSweepModule, TextDataModule, seed_everything_default=1337,
                           args=["--config", str(self.configs[statistics]), *self.overrides], run=False)

    def tokens(self, cli: ActSweepCLI) -> int:
        data = cli.datamodule
        return self.steps * data.batch_size * data.block_size

    def lightning(self, statistics: bool) -> dict[str, float]:
        """Tokens/s of `trainer.fit` over the timed steps."""
        cli = self.cli(statistics)
        clock = StepClock(self.warmup, self.warmup + self.steps)
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return rates(self.tokens(cli), clock.times[clock.start], clock.times[clock.stop])

    def bare(self) -> dict[str, float]:
        """Tokens/s of a hand-written loop over the same model, batches, optimizer and schedule."""
        cli = self.cli()
        module, data = cli.model, cli.datamodule
        module.trainer = cli.trainer  # configure_optimizers reads max_steps from it
        data.prepare_data()
        data.setup("fit")
        module.configure_model()
        config = module.configure_optimizers()
        optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        module.model.train()
        start = clocks()
        for step in range(self.warmup + self.steps):
            if step == self.warmup:
                start = clocks()
            x, y = data.train_batch(step)
            loss = module.loss((x, y))  # the same forward and cross-entropy, no Lightning around it
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return rates(self.tokens(cli), start, clocks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-statistics", action="store_true", help="skip the statistics-on arm")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    for size in args.sizes:
        run_size(size, args.reps, statistics=not args.no_statistics)


def run_size(size: str, reps: int, statistics: bool) -> None:
    """Interleave the arms of one size, print the ratios and write its RESULTS.md section."""
    overrides, warmup, steps = SIZES[size]
    with tempfile.TemporaryDirectory() as log_dir:
        bench = Bench(overrides, warmup, steps, log_dir)
        arms = {"bare": bench.bare, "lightning": lambda: bench.lightning(False)}
        if statistics:
            arms["lightning+stats"] = lambda: bench.lightning(True)
        print(f"{size}: {warmup} warmup + {steps} timed steps, {reps} reps")
        results = interleave(arms, reps)
    rows = []
    for arm in list(arms)[1:]:
        target = 0.92 if "stats" in arm else 0.95
        for measure in ("wall", "cpu"):
            ratio = median_ratio(results[arm][measure], results["bare"][measure])
            print(f"{size} {arm}/bare ({measure}) = {ratio:.3f} (target >= {target})")
            rows.append(f"| {arm} | {measure} | {spread(results[arm][measure])} | {spread(results['bare'][measure])} "
                        f"| **{ratio:.3f}** | {target} |")
    body = (
        f"Overrides of configs/quickstart.yaml: `{' '.join(overrides) or 'none'}`; tokens/s over {steps} timed "
        f"steps after {warmup} warmup steps, {reps} interleaved repetitions; ratio = median of per-repetition "
        f"ratios. `lightning+stats` keeps the statistics callbacks of quickstart.yaml: "
        f"{', '.join(name.rsplit('.', 1)[1] for name in bench.statistics)}.\n\n"
        "`wall`: tokens per wall-clock second; `cpu`: tokens per CPU second of the process (all threads), "
        "which other users of the machine disturb far less.\n\n"
        "| arm | clock | tokens/s median (min–max) | bare tokens/s | ratio | target |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows)
    )
    write_section(f"Training throughput ({size}): actsweep fit vs bare PyTorch loop", body)


if __name__ == "__main__":
    main()
