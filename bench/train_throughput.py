"""`actsweep fit` as shipped against an independent bare PyTorch loop (bench/nanogpt.py).

Three arms per size, interleaved with rotating order in one process:
- `bare`: bench/nanogpt.py, a nanoGPT-style GPT of the same size with `torch.randint` batches and
  the shipped AdamW settings and schedule, written without actsweep's model, data or loop;
- `shipped`: `actsweep fit --config configs/quickstart.yaml` (plus the size's overrides) with its
  statistics callbacks, progress bar, learning-rate monitor, checkpoints and validation as shipped;
- `no-stats`: the same without the `actsweep.stats` callbacks.
Each arm is timed from `warmup` steps done to `warmup + steps` steps done (wall clock and process
CPU time). The only additions to `actsweep fit` are a temporary log folder, `max_steps` and one
callback that reads the clock as each step starts. Figures are medians over repetitions of
per-repetition time ratios (arm / bare, shipped / no-stats): below 1 is faster.

    python bench/train_throughput.py                          # quickstart and blog sizes, 5 reps
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

import nanogpt
from actsweep.train.cli import run_cli

QUICKSTART = ROOT / "configs" / "quickstart.yaml"
# name -> (CLI overrides of quickstart.yaml, warmup steps, timed steps). Steady-state training steps,
# as the bare loop runs them: the quickstart window holds eight logging steps (statistics, progress
# bar, learning-rate monitor) and no validation (shipped, the quickstart validates once, at step 300;
# here two batches of it, after the window);
# the blog-size window (seconds a step) one logging step, and its validation two batches.
SIZES: dict[str, tuple[list[str], int, int]] = {
    "quickstart": (["--trainer.limit_val_batches=2"], 10, 80),
    "blog": (["--model.n_layer=6", "--model.n_head=6", "--model.n_embd=384", "--model.pad_vocab_multiple=64",
              "--data.tokenizer=gpt2", "--data.batch_size=8", "--trainer.limit_val_batches=2"], 1, 10),
}


def clocks() -> tuple[float, float]:
    """(wall clock, CPU time of this process: all its threads)."""
    return time.perf_counter(), time.process_time()


class StepClock(L.Callback):
    """`clocks()` by steps done, read as each step starts: after the previous step's hooks, validation
    and checkpoint (added to `actsweep fit` with `--trainer.callbacks+=train_throughput.StepClock`)."""

    def __init__(self) -> None:
        self.times: dict[int, tuple[float, float]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.times[trainer.global_step] = clocks()


def window(times: dict[int, tuple[float, float]], start: int, stop: int) -> dict[str, float]:
    """Wall and CPU seconds from `start` steps done to `stop` steps done."""
    return {"wall": times[stop][0] - times[start][0], "cpu": times[stop][1] - times[start][1]}


def without_statistics(folder: Path) -> tuple[Path, list[str]]:
    """configs/quickstart.yaml without its `actsweep.stats` callbacks, written into `folder`; and their names."""
    config = yaml.safe_load(QUICKSTART.read_text())
    callbacks = config["trainer"]["callbacks"]
    statistics = [cb["class_path"] for cb in callbacks if cb["class_path"].startswith("actsweep.stats.")]
    config["trainer"]["callbacks"] = [cb for cb in callbacks if cb["class_path"] not in statistics]
    path = folder / "no-stats.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, statistics


class Size:
    """One model size: `actsweep fit` with and without statistics, and the bare loop."""

    def __init__(self, overrides: list[str], warmup: int, steps: int, folder: Path, threads: int) -> None:
        self.warmup, self.steps = warmup, steps
        # one step more than the window: its start reads the clock after the window's last step
        self.args = [*overrides, f"--trainer.max_steps={warmup + steps + 1}", f"--trainer.logger.init_args.save_dir={folder}",
                     f"--threads={threads}"]  # `actsweep fit` sets them; the bare loop runs in the same process
        no_stats, self.statistics = without_statistics(folder)
        self.configs = {"shipped": QUICKSTART, "no-stats": no_stats}
        # One step first: builds the token cache, and its model gives the bare loop its size.
        module = run_cli(["fit", "--config", str(QUICKSTART), *self.args, "--trainer.max_steps=1"]).model
        c, hp = module.config, module.hparams
        self.bare_config = nanogpt.Config(
            vocab_size=c.padded_vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
            n_embd=c.n_embd, batch_size=module.trainer.datamodule.batch_size, lr=hp.lr, betas=tuple(hp.betas),
            weight_decay=hp.weight_decay, warmup=hp.warmup, min_lr_ratio=hp.min_lr_ratio)

    def fit(self, arm: str) -> dict[str, float]:
        cli = run_cli(["fit", "--config", str(self.configs[arm]), *self.args,
                       "--trainer.callbacks+=train_throughput.StepClock"])
        clock = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "StepClock")
        return window(clock.times, self.warmup, self.warmup + self.steps)

    def bare(self) -> dict[str, float]:
        times: dict[int, tuple[float, float]] = {}
        nanogpt.train(self.bare_config, self.warmup + self.steps, on_step_end=lambda step: times.__setitem__(step, clocks()))
        return window(times, self.warmup, self.warmup + self.steps)


def run_size(name: str, reps: int, threads: int) -> None:
    """Interleave the arms of one size, print the ratios and write its RESULTS.md section."""
    overrides, warmup, steps = SIZES[name]
    with tempfile.TemporaryDirectory() as folder:
        size = Size(overrides, warmup, steps, Path(folder), threads)
        arms = {"bare": size.bare, "shipped": lambda: size.fit("shipped"), "no-stats": lambda: size.fit("no-stats")}
        print(f"{name}: {warmup} warmup + {steps} timed steps, {reps} reps", flush=True)
        results = interleave(arms, reps)
    ratios = {("shipped", "bare"): 1.05, ("no-stats", "bare"): None, ("shipped", "no-stats"): 1.03}
    rows = []
    for (arm, base), target in ratios.items():
        for measure in ("wall", "cpu"):
            ratio = median_ratio(results[arm][measure], results[base][measure])
            each = ", ".join(f"{a / b:.3f}" for a, b in zip(results[arm][measure], results[base][measure]))
            goal = f"≤ {target}" if target else ""
            print(f"{name} {arm}/{base} time ({measure}) = {ratio:.3f} {goal}  [{each}]")
            rows.append(f"| {arm} / {base} | {measure} | **{ratio:.3f}** | {each} | {goal} |")
    ms = {arm: spread([1000 * t / steps for t in results[arm]["wall"]]) for arm in arms}
    body = (
        f"Overrides of configs/quickstart.yaml: `{' '.join(overrides) or 'none'}`; {steps} timed steps after "
        f"{warmup} warmup steps, {threads} torch thread(s), {reps} interleaved repetitions (rotating order). Ratios of seconds over the "
        "timed steps (below 1: faster), median of the per-repetition ratios, each listed. `bare`: "
        f"bench/nanogpt.py ({size.bare_config.n_layer}L/{size.bare_config.n_embd}d, vocabulary "
        f"{size.bare_config.vocab_size}, batch {size.bare_config.batch_size}×{size.bare_config.block_size}); "
        f"statistics in `shipped`: {', '.join(n.rsplit('.', 1)[1] for n in size.statistics)}.\n\n"
        "`wall`: wall-clock seconds; `cpu`: CPU seconds of the process (all threads), which other users of "
        "the machine disturb less.\n\n"
        "| ratio | clock | median | each repetition | target |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
        + "\n\nms per step, wall clock, median (min–max): "
        + "; ".join(f"{arm} {value}" for arm, value in ms.items())
    )
    write_section(f"Training throughput ({name}): actsweep fit vs an independent bare loop", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in every arm (1: as each run of `actsweep sweep --jobs 2` on 2 cores)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    for name in args.sizes:
        run_size(name, args.reps, args.threads)


if __name__ == "__main__":
    main()
