"""Training throughput with every statistics callback on vs off, at the quickstart size.

Runs real `lightning.Trainer` fits, interleaved ON, OFF, ON, OFF..., each with the TensorBoard logger
on and `log_every_n_steps` from configs/quickstart.yaml, validation and checkpointing off in both arms
(the probe and dead units run at validation, which is identical work per run and off here). Timing
starts after `--warmup` steps. Prints the median tokens/s of each arm and their ratio, and with
`--write` records it in bench/RESULTS.md. Both wall-clock and process CPU-time rates are measured:
on a shared machine the CPU-time ratio is the robust one (other processes' load moves wall time).

    python bench/stats_overhead.py --reps 5 --steps 60 --write
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from actsweep.callbacks import AttentionEntropy, DivergenceGuard, FFNStats, GradNorms, SlopeMonitor, ThroughputMonitor
from actsweep.data import TextDataModule
from actsweep.module import ActSweepModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Statistics callbacks overhead"


class Clock(L.Callback):
    """Wall and process CPU time of the training steps after the warm-up ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps = warmup, 0
        self.start, self.seconds = (0.0, 0.0), (0.0, 0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = (time.perf_counter(), time.process_time())

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = (time.perf_counter() - self.start[0], time.process_time() - self.start[1])
        self.steps = trainer.global_step - self.warmup


def statistics_callbacks() -> list[L.Callback]:
    return [FFNStats(), GradNorms(), AttentionEntropy(), SlopeMonitor(), DivergenceGuard(), ThroughputMonitor()]


def tokens_per_sec(config: dict, data: TextDataModule, stats: bool, steps: int, warmup: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of one fit."""
    torch.manual_seed(0)
    model_args = {k: v for k, v in config["model"].items()}
    module = ActSweepModule(vocab_size=data.vocab_size, block_size=data.hparams.block_size, **model_args)
    clock = Clock(warmup)
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            max_steps=steps, log_every_n_steps=config["trainer"]["log_every_n_steps"],
            logger=L.pytorch.loggers.TensorBoardLogger(logs), callbacks=[clock, *(statistics_callbacks() if stats else [])],
            limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(module, data)
    tokens = clock.steps * data.hparams.batch_size * data.hparams.block_size
    return tokens / clock.seconds[0], tokens / clock.seconds[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({cpu}, {torch.get_num_threads()} threads)"
    return f"{device}; torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}"


def record(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (other sections belong to other benchmarks)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="record the result in bench/RESULTS.md")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    data = TextDataModule(**config["data"], seed=config["seed_everything"])
    data.prepare_data()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for rep in range(args.reps):
        for stats in (True, False):
            runs[stats].append(tokens_per_sec(config, data, stats, args.steps, args.warmup))
        (on_wall, on_cpu), (off_wall, off_cpu) = runs[True][-1], runs[False][-1]
        print(f"rep {rep}: wall ON {on_wall:,.0f} OFF {off_wall:,.0f} tok/s ({on_wall / off_wall:.3f}); "
              f"CPU time ON {on_cpu:,.0f} OFF {off_cpu:,.0f} tok/s ({on_cpu / off_cpu:.3f})", flush=True)
    on, off = ([statistics.median(r[k] for r in runs[s]) for k in (0, 1)] for s in (True, False))
    wall, cpu = on[0] / off[0], on[1] / off[1]
    print(f"median ratio ON/OFF: wall {wall:.3f}, CPU time {cpu:.3f}")
    if args.write:
        record(
            f"{SECTION}\n\n"
            f"Quickstart model ({config['model']['n_layer']} layers, width {config['model']['n_embd']}, "
            f"{config['model']['n_head']} heads, char vocab {data.vocab_size}, block {config['data']['block_size']}, "
            f"batch {config['data']['batch_size']}), log_every_n_steps {config['trainer']['log_every_n_steps']}, "
            f"all six statistics callbacks ON vs OFF, interleaved, {args.reps} repetitions of "
            f"{args.steps} steps ({args.warmup} warm-up steps untimed), validation off in both arms.\n\n"
            f"- Machine: {machine()}\n"
            f"- Command: `python bench/stats_overhead.py --reps {args.reps} --steps {args.steps} --warmup {args.warmup} --write`\n"
            f"- Median tokens per CPU second ON {on[1]:,.0f}, OFF {off[1]:,.0f}; per wall second ON {on[0]:,.0f}, OFF {off[0]:,.0f}\n"
            f"- **Ratio ON/OFF: {cpu:.3f} in CPU time**, {wall:.3f} in wall time (target >= 0.97)\n"
        )


if __name__ == "__main__":
    main()
