"""GPU checks in one run of at most 9 minutes: throughput, host syncs, probe and kernel accuracy.

1. Tokens/s and MFU of `actsweep fit` (configs/quickstart.yaml resized, statistics on and off)
   against the independent bare loop (bench/nanogpt.py) at the blog size (6L/384d, context 256) and
   the GPT-2 size of ReLU's Revival (12L/768d, context 1024), in bf16 and fp16, eager and compiled.
2. No host synchronisation on non-logging steps of `actsweep fit` (`torch.cuda.set_sync_debug_mode`).
3. The attention-entropy probe equals an explicit float64 softmax computation on the device.
4. Gradients of fused kernels (flash, efficient, cudnn) vs math vs float64 at growing attention
   logits: where `sdpa_backend: adaptive` must switch (its limit, `exact_attention_above`, is 1e4).

    python bench/gpu.py                      # everything, writes its section of bench/RESULTS.md
    python bench/gpu.py --only checks        # 2-4 only (a minute)
    python bench/gpu.py --shrink --out /tmp/gpu.md   # every part tiny, CPU allowed (CI; tests/test_bench_gpu.py)

0. The blog, blog_code and revival smokes (`actsweep sweep ... --smoke`) at the studies' precision.
5. Aggregate tokens/s of K = 1, 2, 4, 8 concurrent blog-size fits on one device (the default K).

Each part has its own deadline (`DEADLINES`); MFU uses `PEAK_FLOPS`, this file's dense-peak table.
Parts 3 and 4 also run on CPU (tests/test_bench_gpu.py runs them small).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, write_section
from torch.nn.attention import SDPBackend, sdpa_kernel

import nanogpt

QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SIZES = {  # name -> (n_layer, n_head, n_embd, block_size, batch_size)
    "blog": (6, 6, 384, 256, 32),
    "gpt2": (12, 12, 768, 1024, 16),
}
PRECISIONS = {"bf16": ("bf16-mixed", torch.bfloat16), "fp16": ("16-mixed", torch.float16)}
WARMUP, STEPS = 5, 20  # timed steps hold two logging steps at log_every_n_steps=10
# Each part ends by its own deadline (seconds from the start) so the run fits 9 minutes on a GPU;
# cells left when a part's deadline passes are reported as skipped.
DEADLINES = {"smokes": 120, "throughput": 390, "runs_per_device": 510}
# Dense (no sparsity) peak FLOP/s by device-name substring, owned here rather than taken from
# lightning so the MFU denominator is visible; unknown devices report no MFU.
PEAK_FLOPS = {  # substring of torch.cuda.get_device_name() -> {precision: FLOP/s}
    "H200": {"bf16": 989e12, "fp16": 989e12},
    "H100": {"bf16": 989e12, "fp16": 989e12},
    "A100": {"bf16": 312e12, "fp16": 312e12},
}


def shrink() -> None:
    """Every part tiny so the whole benchmark runs end to end on CPU in CI (sizes, steps, one precision)."""
    global WARMUP, STEPS
    SIZES.update({"blog": (1, 2, 32, 32, 4), "gpt2": (2, 2, 32, 64, 2)})
    for fp16 in [k for k in PRECISIONS if k != "bf16" and not torch.cuda.is_available()]:
        del PRECISIONS[fp16]  # Lightning refuses 16-mixed on CPU
    WARMUP, STEPS = 2, 3


def peak_flops(device_name: str, precision: str) -> float | None:
    """The table's dense peak for the first key found in the device's name (None if unknown)."""
    return next((peaks.get(precision) for key, peaks in PEAK_FLOPS.items() if key in device_name), None)


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def flops_per_token(n_layer: int, n_embd: int, block_size: int, vocab: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6 × non-embedding-position weights + 12·L·C·T."""
    params = 12 * n_layer * n_embd**2 + vocab * n_embd  # blocks (biases and norms left out) + tied embedding
    return 6 * params + 12 * n_layer * n_embd * block_size


def mfu(tokens_per_s: float, flops_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the device's peak (None if unknown)."""
    return None if not peak_flops else tokens_per_s * flops_token / peak_flops


# -- 3. entropy probe vs explicit softmax ----------------------------------------------------------

def probe_vs_explicit(device: str, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, T: int = 64) -> float:
    """Largest |probe entropy − float64 explicit softmax entropy| (nats) over layers and heads."""
    from actsweep.model.gpt import GPT, GPTConfig
    from actsweep.model.hooks import capture
    from actsweep.stats.entropy import probe_entropy

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=101, block_size=T, n_layer=n_layer, n_head=n_head, n_embd=n_embd)).to(device)
    idx = torch.randint(0, 101, (4, T), device=device)
    probe = probe_entropy(model, idx)
    with torch.no_grad(), capture(model.eval(), "blocks.*.attn.hook_[qk]") as acts:
        model(idx)
    worst = 0.0
    for i in range(n_layer):
        q, k = (acts[f"blocks.{i}.attn.hook_{n}"].double() for n in "qk")
        s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=device).tril(), float("-inf"))
        p = torch.softmax(s, -1)
        ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1).mean(-1).mean(0)  # (H,)
        worst = max(worst, (probe[i].double() - ent).abs().max().item())
    return worst


# -- 4. fused vs math gradients at large logits -----------------------------------------------------

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
           "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def kernel_gradient_errors(device: str, logits: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7),
                           dtype: torch.dtype = torch.float32, shape: tuple[int, int, int, int] = (4, 4, 128, 64)
                           ) -> dict[str, dict[float, float | None]]:
    """{kernel: {largest |logit|: relative error of dL/dq against float64}} (None: kernel unavailable)."""
    torch.manual_seed(0)
    q0, k0, v, g = (torch.randn(shape, device=device) for _ in range(4))
    raw = ((q0 @ k0.transpose(-1, -2)).abs().amax() / math.sqrt(shape[-1])).item()
    errors: dict[str, dict[float, float | None]] = {name: {} for name in KERNELS}
    for target in logits:
        s = math.sqrt(target / raw)
        inputs = [t.to(dtype) for t in (q0 * s, k0 * s, v, g)]  # the reference sees the same rounded inputs
        q = inputs[0].double().requires_grad_()
        exact = F.scaled_dot_product_attention(q, *(t.double() for t in inputs[1:3]), is_causal=True)
        reference = torch.autograd.grad(exact, q, inputs[3].double())[0]
        for name, kernel in KERNELS.items():
            q = inputs[0].clone().requires_grad_()
            try:
                with sdpa_kernel([kernel]):
                    y = F.scaled_dot_product_attention(q, inputs[1], inputs[2], is_causal=True)
                grad = torch.autograd.grad(y, q, inputs[3])[0].double()
                errors[name][target] = ((grad - reference).norm() / reference.norm()).item()
            except RuntimeError:  # no such kernel for this device, dtype or shape
                errors[name][target] = None
    return errors


def error_table(errors: dict[str, dict[float, float | None]]) -> str:
    logits = list(next(iter(errors.values())))
    rows = [f"| {name} | " + " | ".join("n/a" if e is None else f"{e:.1e}" for e in by.values()) + " |"
            for name, by in errors.items()]
    header = "| kernel | " + " | ".join(f"{x:.0e}" for x in logits) + " |\n" + "|---" * (len(logits) + 1) + "|\n"
    return header + "\n".join(rows)


# -- 0. the studies' smokes at their real precision ------------------------------------------------

SMOKES = ("blog", "blog_code", "revival")


def smokes(deadline: float) -> list[str]:
    """`actsweep sweep configs/sweeps/<name>.yaml --smoke` for each study; on CUDA the smoke keeps the
    study's precision (actsweep/study/smoke.py only swaps fp16 for bf16 without CUDA)."""
    import subprocess

    rows = []
    for name in SMOKES:
        left = deadline - time.monotonic()
        if left <= 0:
            rows.append(f"| {name} | skipped: time budget spent | |")
            continue
        began = time.monotonic()
        try:
            rc = subprocess.run([sys.executable, "-c", "from actsweep.cli import main; main()", "sweep", f"configs/sweeps/{name}.yaml", "--smoke"],
                                cwd=ROOT, timeout=left, capture_output=True).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        rows.append(f"| {name} | {'ok' if rc == 0 else f'failed ({rc})'} | {time.monotonic() - began:.0f} s |")
        print(rows[-1], flush=True)
    return rows


# -- 1 and 2. throughput and host syncs --------------------------------------------------------------

class StepTimer(L.Callback):
    """Synchronised clock at the end of steps WARMUP and WARMUP + STEPS (`--trainer.callbacks+=gpu.StepTimer`)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step in (WARMUP, WARMUP + STEPS):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times[trainer.global_step] = time.perf_counter()


class SyncWatch(L.Callback):
    """CUDA's sync debug mode "warn" from the start of each non-logging step (after two steps of lazy
    initialisation) to the start of the next step; off on logging steps, which may sync."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        from actsweep.stats.common import is_logging_step

        torch.cuda.set_sync_debug_mode(0 if is_logging_step(trainer) or trainer.global_step < 2 else "warn")

    def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
        torch.cuda.set_sync_debug_mode(0)


def fit(size: str, precision: str, compiled: bool, stats: bool, callback: str) -> tuple[object, int]:
    """Run `actsweep fit` (quickstart.yaml resized, no validation: it would fall outside the timed steps) with one extra callback;
    returns the CLI and the number of sync-debug warnings."""
    from actsweep.train.cli import run_cli
    from train_throughput import without_statistics

    n_layer, n_head, n_embd, block, batch = SIZES[size]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = QUICKSTART if stats else without_statistics(Path(folder))[0]
        cli = run_cli([
            "fit", "--config", str(config), f"--model.n_layer={n_layer}", f"--model.n_head={n_head}",
            f"--model.n_embd={n_embd}", "--model.pad_vocab_multiple=64", f"--model.compile={compiled}",
            "--data.tokenizer=gpt2", f"--data.block_size={block}", f"--data.batch_size={batch}",
            f"--trainer.precision={PRECISIONS[precision][0]}", f"--trainer.max_steps={WARMUP + STEPS}",
            "--trainer.val_check_interval=1000", "--trainer.limit_val_batches=0", f"--trainer.logger.init_args.save_dir={folder}",
            f"--trainer.callbacks+={callback}"])
    return cli, sum("synchroniz" in str(w.message) for w in caught)


def fit_tokens_per_s(size: str, precision: str, compiled: bool, stats: bool) -> float:
    cli, _ = fit(size, precision, compiled, stats, "gpu.StepTimer")
    timer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "StepTimer")
    data = cli.datamodule
    return STEPS * data.batch_size * data.block_size / (timer.times[WARMUP + STEPS] - timer.times[WARMUP])


def host_syncs(size: str = "blog", precision: str = "bf16") -> int:
    """Sync-debug warnings on non-logging steps of `actsweep fit` as shipped (eager)."""
    return fit(size, precision, compiled=False, stats=True, callback="gpu.SyncWatch")[1]


def bare_tokens_per_s(size: str, precision: str, compiled: bool) -> float:
    n_layer, n_head, n_embd, block, batch = SIZES[size]
    c = nanogpt.Config(vocab_size=50304, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd, batch_size=batch)
    times: dict[int, float] = {}

    def clock(step: int) -> None:
        if step in (WARMUP, WARMUP + STEPS):
            if device == "cuda":
                torch.cuda.synchronize()
            times[step] = time.perf_counter()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    nanogpt.train(c, WARMUP + STEPS, on_step_end=clock, device=device, autocast=PRECISIONS[precision][1], compile=compiled)
    return STEPS * batch * block / (times[WARMUP + STEPS] - times[WARMUP])


def throughput(deadline: float) -> list[str]:
    rows = []
    cells = [(s, p, c) for c in (False, True) for s in SIZES for p in PRECISIONS]
    for size, precision, compiled in cells:
        if time.monotonic() > deadline:
            rows.append(f"| {size} | {precision} | {'compiled' if compiled else 'eager'} | skipped: time budget spent | | | |")
            continue
        n_layer, _, n_embd, block, _ = SIZES[size]
        peak = peak_flops(device_name(), precision)
        per_token = flops_per_token(n_layer, n_embd, block, 50304)
        bare = bare_tokens_per_s(size, precision, compiled)
        shipped = fit_tokens_per_s(size, precision, compiled, stats=True)
        plain = fit_tokens_per_s(size, precision, compiled, stats=False)
        util = mfu(bare, per_token, peak)
        rows.append(f"| {size} | {precision} | {'compiled' if compiled else 'eager'} | {bare:,.0f} "
                    f"({'n/a' if util is None else f'{util:.1%}'}) | {bare / shipped:.3f} | {bare / plain:.3f} "
                    f"| {plain / shipped:.3f} |")
        print(rows[-1], flush=True)
    return rows


# -- 5. runs per device: K concurrent `actsweep fit` processes on one device ------------------------

RUNS_PER_DEVICE = (1, 2, 4, 8)


def concurrent_tokens_per_s(k: int, compiled: bool, shrunk: bool) -> float:
    """Sum of the tokens/s of K blog-size fits started together on the same device (each times its own
    steps; started at once, their timed windows overlap)."""
    import subprocess

    cmd = [sys.executable, __file__, "--one", "blog", f"--compiled={compiled}"] + (["--shrink"] if shrunk else [])
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(k)]
    return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)


def runs_per_device(deadline: float, shrunk: bool) -> list[str]:
    rows = []
    for compiled in (False, True):
        # CI: two cores, and compiling on CPU is the slow part
        for k in RUNS_PER_DEVICE[:1 if compiled else 2] if shrunk else RUNS_PER_DEVICE:
            mode = "compiled" if compiled else "eager"
            if time.monotonic() > deadline:
                rows.append(f"| {k} | {mode} | skipped: time budget spent |")
                continue
            rows.append(f"| {k} | {mode} | {concurrent_tokens_per_s(k, compiled, shrunk):,.0f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["checks", "throughput"])
    parser.add_argument("--shrink", action="store_true", help="every part tiny, CPU allowed (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="file whose section is written")
    parser.add_argument("--one", choices=list(SIZES), help=argparse.SUPPRESS)  # one fit, prints tokens/s (part 5)
    parser.add_argument("--compiled", default="False", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shrink:
        shrink()
        import gpu  # the callbacks the CLI imports by name come from this module, not from __main__

        if gpu is not sys.modules[__name__]:
            gpu.shrink()
    if args.one:
        logging.getLogger("lightning").setLevel(logging.ERROR)
        print(fit_tokens_per_s(args.one, "bf16", args.compiled == "True", stats=True))
        return
    logging.getLogger("lightning").setLevel(logging.ERROR)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.monotonic()
    parts = []
    if args.only is None and not args.shrink:
        parts.append("Smokes (`actsweep sweep configs/sweeps/<name>.yaml --smoke`, the study's precision):\n\n"
                     "| sweep | result | time |\n| --- | --- | --- |\n" + "\n".join(smokes(start + DEADLINES["smokes"])))
    elif args.shrink:
        parts.append("Smokes: skipped in --shrink (CI's .ci/run runs the same three smokes on CPU).")
    if args.only != "throughput":
        worst = probe_vs_explicit(device)
        print(f"entropy probe vs explicit float64 softmax: max |difference| {worst:.2e} nats", flush=True)
        parts.append(f"Entropy probe vs an explicit float64 softmax on {device}: largest difference {worst:.2e} nats.")
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            table = error_table(kernel_gradient_errors(device, dtype=dtype))
            print(f"{dtype}\n{table}", flush=True)
            parts.append(f"Relative error of dL/dq against float64, by kernel and largest |logit| ({dtype}):\n\n{table}")
    if args.only != "throughput" and device == "cuda":
        syncs = host_syncs()
        print(f"host syncs on non-logging steps of actsweep fit (blog size, bf16, eager): {syncs}", flush=True)
        parts.append(f"Host synchronisations on non-logging steps of `actsweep fit` as shipped (blog size, bf16, "
                     f"eager; `torch.cuda.set_sync_debug_mode('warn')`): **{syncs}** (target 0).")
    if args.only != "checks" and (device == "cuda" or args.shrink):
        rows = throughput(start + DEADLINES["throughput"])
        parts.append(
            f"Tokens/s of the bare loop (bench/nanogpt.py) and its MFU; time ratios (below 1: faster) of "
            f"`actsweep fit` as shipped (`shipped`, statistics on) and without the statistics callbacks "
            f"(`plain`); {STEPS} timed steps after {WARMUP}, one run each (targets as on CPU: shipped/bare "
            "≤ 1.05, shipped/plain ≤ 1.03).\n\n"
            "| size | precision | mode | bare tokens/s (MFU) | shipped/bare | plain/bare | shipped/plain |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))
    if args.only is None:
        parts.append("Aggregate tokens/s of K concurrent `actsweep fit` processes (blog size, bf16, statistics "
                     "on) on one device, the measure for the default `runs_per_device`:\n\n"
                     "| K | mode | tokens/s (sum) |\n| --- | --- | --- |\n"
                     + "\n".join(runs_per_device(start + DEADLINES["runs_per_device"], args.shrink)))
    if device != "cuda":
        parts.append("Host syncs: skipped on CPU (`torch.cuda.set_sync_debug_mode` needs CUDA). "
                     "MFU: n/a on CPU (no peak in `PEAK_FLOPS`).")
    if device != "cuda" and not args.shrink:
        parts.append("**Waiting for a GPU**: host syncs, throughput and MFU need CUDA; above are the CPU-possible "
                     "parts, run on CPU (`python bench/gpu.py` on a CUDA machine replaces this section).")
    name = device_name() if device == "cuda" or args.shrink else "waiting for a GPU"
    write_section(f"GPU checks ({name})", "\n\n".join(parts) + f"\n\nTook {time.monotonic() - start:.0f} s.", args.out)


if __name__ == "__main__":
    main()
