"""Speed switches on CPU: torch.compile in place, bf16 mixed precision, fused AdamW as on CUDA,
pinned memory with non-blocking transfers, no host syncs outside logging steps, and the
throughput monitor's arithmetic. Tiny models; compile tests use the `aot_eager` backend for
training (same Dynamo tracing of hooks, no C++ build) and inductor only for a forward pass."""

from __future__ import annotations

import collections
import functools
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection
from torch._dynamo.utils import counters

from actsweep.stats import DivergenceGuard, FFNStats, GradNorms, SlopeMonitor, ThroughputMonitor
from actsweep.stats import throughput
from actsweep.data.module import TextDataModule
from actsweep.model.hooks import hooks
from actsweep.train.module import ActSweepModule
from actsweep.train.progress import LossProgressBar
from helpers import ScalarLogger

BLOCK = 16


@pytest.fixture
def data(tmp_path) -> TextDataModule:
    """A char-level data module over a small local corpus."""
    docs = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * 6 for i in range(40)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("<|endoftext|>".join(docs))
    return TextDataModule(source=str(corpus), tokenizer="char", block_size=BLOCK, batch_size=4,
                          val_windows=4, cache_dir=str(tmp_path / "cache"))


def tiny(data: TextDataModule, n_layer: int = 2, **kwargs) -> ActSweepModule:
    L.seed_everything(0, verbose=False)
    return ActSweepModule(vocab_size=data.vocab_size, block_size=BLOCK, n_layer=n_layer, n_head=2, n_embd=16, **kwargs)


def fit(module: ActSweepModule, data: TextDataModule, tmp_path, callbacks=(), **kwargs) -> tuple[L.Trainer, ScalarLogger]:
    logger = ScalarLogger()
    options = dict(max_steps=6, log_every_n_steps=3, limit_val_batches=0, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, logger=logger, accelerator="cpu",
                   default_root_dir=tmp_path)
    trainer = L.Trainer(callbacks=list(callbacks), **{**options, **kwargs})
    trainer.fit(module, datamodule=data)
    return trainer, logger


@pytest.fixture
def aot_eager(monkeypatch) -> None:
    """`Module.compile()` with the aot_eager backend: Dynamo and AOTAutograd, no inductor C++ build."""
    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(torch.nn.Module.compile, backend="aot_eager"))


def test_compiled_logits_equal_eager(data):
    module = tiny(data, n_layer=1, compile=True)
    idx = data.probe_batch(2)
    with torch.no_grad():
        eager = module(idx)
        module.configure_model()
        compiled = module(idx)
    assert module.model._compiled_call_impl is not None  # compiled in place
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_compiled_training_keeps_hooks_and_clean_checkpoints(data, tmp_path, aot_eager):
    logged = {}
    for compile in (False, True):
        module = tiny(data, compile=compile)
        ffn = FFNStats(dead_units=False)
        torch._dynamo.reset()
        counters.clear()
        trainer, logger = fit(module, data, tmp_path, callbacks=[ffn], max_steps=3)
        assert ffn.computations == 1
        logged[compile] = logger.scalars["ffn/act_mean"]
    # Dynamo compiled the model (armed hooks included) as one graph, without falling back to eager.
    assert module.model._compiled_call_impl is not None
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["graph_break"], dict(counters["graph_break"])
    # The hooks registered in `setup` run inside the compiled graph: same statistics as eager.
    assert [s for s, _ in logged[True]] == [s for s, _ in logged[False]]
    assert [v for _, v in logged[True]] == pytest.approx([v for _, v in logged[False]], rel=1e-4, abs=1e-6)

    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    restored = ActSweepModule.load_from_checkpoint(path, compile=False)
    idx = data.probe_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(restored(idx), module(idx), rtol=1e-4, atol=1e-5)


def test_compiled_adaptive_attention_tracks_logits_and_switches_like_eager(data, tmp_path, aot_eager):
    """The logit bound is a buffer written inside the compiled graph; the switch recompiles once."""
    losses, peaks = {}, {}
    for compile in (False, True):
        module = tiny(data, compile=compile, norm="none", exact_attention_above=1e-6)
        trainer, logger = fit(module, data, tmp_path, max_steps=3, log_every_n_steps=2)
        assert module.model.exact_attention  # switched at step 1, the first logging step: no more checks
        losses[compile], peaks[compile] = logger.scalars["train/loss"], logger.scalars["attn/logit_bound"]
    assert [s for s, _ in peaks[True]] == [s for s, _ in peaks[False]] == [1]
    assert [v for _, v in peaks[True]] == pytest.approx([v for _, v in peaks[False]], rel=1e-4)
    assert [v for _, v in losses[True]] == pytest.approx([v for _, v in losses[False]], rel=1e-4)


def test_bf16_mixed_runs_on_cpu_close_to_fp32(data, tmp_path):
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        module = tiny(data)
        seen: set[tuple[str, torch.dtype]] = set()  # what the blocks' matmuls put out in training steps
        record = {p: lambda t, name: seen.add((name, t.dtype)) if torch.is_grad_enabled() else None
                  for p in ("blocks.*.attn.hook_q", "blocks.*.mlp.hook_pre")}
        with hooks(module.model, record):
            trainer, logger = fit(module, data, tmp_path, precision=precision, max_steps=3)
        assert trainer.global_step == 3
        expected = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
        assert seen == {(f"blocks.{i}.{site}", expected) for i in range(2) for site in ("attn.hook_q", "mlp.hook_pre")}
        batch = data.train_batch(100)
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            losses[precision] = module.loss(batch).item()
    assert losses["bf16-mixed"] == pytest.approx(losses["32-true"], rel=0.02)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fused_adamw_is_built_and_stepped_on_cuda_only(data, tmp_path, monkeypatch, device):
    """torch 2.13 runs fused AdamW on CPU, so the optimizer a GPU run builds is built and stepped here
    (the module decides as on `device`, the tensors stay on the CPU), and its weights equal those of
    AdamW's for-loop kernel."""
    fused_steps = []
    fused_adamw = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **kw: fused_steps.append(1) or fused_adamw(*a, **kw))
    monkeypatch.setattr(ActSweepModule, "device", property(lambda self: torch.device(device)))
    weights = {}
    for kernel in ("auto", "for_loop"):
        module = tiny(data, adamw_kernel=kernel, dropout=0.0)
        trainer, _ = fit(module, data, tmp_path, max_steps=2)
        weights[kernel] = torch.cat([p.detach().flatten() for p in module.parameters()])
        if kernel == "auto":
            groups = len(trainer.optimizers[0].param_groups)
            assert bool(trainer.optimizers[0].defaults.get("fused")) == (device == "cuda")
            assert len(fused_steps) == (2 * groups if device == "cuda" else 0)  # one call per group and step
    torch.testing.assert_close(weights["auto"], weights["for_loop"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(weights["auto"], torch.cat([p.detach().flatten() for p in tiny(data).parameters()]))


def test_pin_memory_only_with_cuda_and_non_blocking_transfer(data, monkeypatch):
    data.setup("fit")
    assert not data.train_dataloader().pin_memory  # no CUDA here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert data.train_dataloader().pin_memory and data.val_dataloader().pin_memory
    # Lightning's batch transfer (what `transfer_batch_to_device` runs) asks for non_blocking copies.
    calls = []
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kw: calls.append(kw) or self)
    move_data_to_device(data.train_batch(0), torch.device("cuda", 0))
    assert calls == [{"non_blocking": True}] * 2


SYNCS = ("item", "cpu", "tolist", "__float__", "__int__", "__bool__", "numpy")


class SyncCounter(L.Callback):
    """Counts host transfers of tensors per optimizer step (by the step being computed).

    AdamW's per-parameter `step` counters are left out: torch keeps them on the host (unless
    `capturable`) even for CUDA parameters, so their `.item()` never waits for a device."""

    def __init__(self, monkeypatch) -> None:
        self.step = -1
        self.calls: collections.Counter[int] = collections.Counter()
        self.optimizers: list[torch.optim.Optimizer] = []
        for name in SYNCS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))
        self.logs: collections.Counter[int] = collections.Counter()
        log = _ResultCollection.log
        monkeypatch.setattr(_ResultCollection, "log", lambda results, *a, **kw: self.logs.update([self.step]) or log(results, *a, **kw))

    def _counting(self, original):
        @functools.wraps(original)
        def counted(tensor, *args, **kwargs):
            if not self._step_counter(tensor):
                self.calls[self.step] += 1
            return original(tensor, *args, **kwargs)

        return counted

    def _step_counter(self, tensor: torch.Tensor) -> bool:
        return any(tensor is state.get("step") for opt in self.optimizers for state in opt.state.values())

    def on_train_start(self, trainer, pl_module) -> None:
        self.optimizers = trainer.optimizers

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.step = trainer.global_step


def test_no_host_syncs_outside_logging_steps(data, tmp_path, monkeypatch):
    data.setup("fit")
    counter = SyncCounter(monkeypatch)
    bar = LossProgressBar(refresh_rate=5)
    callbacks = [FFNStats(), GradNorms(), SlopeMonitor(), DivergenceGuard(), ThroughputMonitor(), bar, counter]
    fit(tiny(data, activation="learnable_leaky_relu"), data, tmp_path, callbacks=callbacks, max_steps=11,
        log_every_n_steps=5, enable_progress_bar=True)
    logging_steps = {4, 9, 10}  # (step + 1) % 5 == 0, and the last step (Lightning logs when stopping)
    assert not set(counter.calls) - logging_steps - {-1}, dict(counter.calls)
    assert set(counter.logs) == logging_steps  # `self.log` (~1 ms of Python a call) only there too
    assert counter.calls[4] > 0
    assert "train/loss" in bar.train_progress_bar.postfix  # the loss is still shown


def test_throughput_is_tokens_over_elapsed(monkeypatch):
    clock = iter([10.0, 12.5, 20.0])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(throughput, "is_logging_step", lambda trainer: True)
    monkeypatch.setattr(throughput, "get_available_flops", lambda device, dtype: 1e9)
    logger = ScalarLogger()
    trainer = SimpleNamespace(precision="32-true", world_size=2, accumulate_grad_batches=3,
                              global_step=0, loggers=[logger], is_global_zero=True,
                              callback_metrics={},
                              fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0)))
    module = SimpleNamespace(device=torch.device("xla"), model=SimpleNamespace(flops_per_token=lambda: 600.0))
    monitor = ThroughputMonitor()
    monitor.on_train_start(trainer, module)
    batch = (torch.zeros(4, 8, dtype=torch.long),) * 2
    for step in (5, 9):
        trainer.global_step = step
        monitor.on_train_batch_end(trainer, module, None, batch, step)
    tokens = (9 - 5) * 3 * 4 * 8 * 2  # steps x accumulation x batch x block x processes
    assert logger.scalars["perf/tokens_per_sec"] == [(0, pytest.approx(tokens / 2.5))]
    assert logger.scalars["perf/mfu"] == [(0, pytest.approx(tokens / 2.5 * 600 / 2e9, rel=1e-6))]
    # Validation between two logging steps is not counted as training time.
    monitor.on_validation_start(trainer, module)  # clock 20.0
    monitor._last = (9, 15.0)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: 26.0)
    monitor.on_validation_end(trainer, module)
    assert monitor._last == (9, 21.0)
