"""Statistics callbacks, each checked against an independent computation on tiny models (CPU, offline)."""

from __future__ import annotations

import math
import signal

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from actsweep.stats import (
    AttentionEntropy,
    DivergenceGuard,
    FFNStats,
    GradNorms,
    SlopeMonitor,
    ThroughputMonitor,
    probe_entropy,
)
from actsweep.status import read_status
from actsweep.train.run_status import RunStatus
from actsweep.stats.common import all_reduce_
from actsweep.stats.probe import ScoresProbe
from actsweep.stats.sink import AttentionSink
from actsweep.stats.ffn import dead_unit_share, ffn_summary
from actsweep.stats.gradients import grad_norm_groups
from actsweep.stats.slopes import slope_metrics
from actsweep.stats.metrics import activation_sums, fired_units, grad_norms, square_sums
from actsweep.model.hooks import capture
from actsweep.model.gpt import GPT, GPTConfig
from actsweep.train.module import ActSweepModule
from helpers import ScalarLogger
from references import reference_entropy

VOCAB, T = 23, 12
TINY = dict(vocab_size=VOCAB, block_size=T, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


class Tokens(L.LightningDataModule):
    """Fixed random (x, y) windows in order; `probe_batch` as `TextDataModule` has it."""

    def __init__(self, n: int = 48, batch_size: int = 8, val_batches: int = 2) -> None:
        super().__init__()
        self.data = torch.randint(0, VOCAB, (n, T + 1), generator=torch.Generator().manual_seed(0))
        self.batch_size, self.n_val = batch_size, val_batches * batch_size

    def _loader(self, rows: torch.Tensor) -> DataLoader:
        return DataLoader([(r[:-1], r[1:]) for r in rows], batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data[: self.n_val])

    def probe_batch(self, n: int | None = None) -> torch.Tensor:
        return self.data[: n or 4, :-1]


def fit(module: L.LightningModule, callbacks: list, tmp_path, datamodule: Tokens | None = None, **trainer_kwargs) -> L.Trainer:
    kwargs = dict(
        max_steps=4, log_every_n_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu", devices=1,
    )
    trainer = L.Trainer(callbacks=callbacks, **{**kwargs, **trainer_kwargs})
    trainer.fit(module, datamodule or Tokens())
    return trainer


# -- FFN statistics ---------------------------------------------------------------------------------


def test_a_training_step_entropy_probe_does_not_replace_ffn_activations(tmp_path):
    """AttentionEntropy listed first probes (a no-grad forward) before FFNStats reduces its step."""
    logged = []
    for callbacks in ([FFNStats()], [AttentionEntropy(every_n_train_steps=1), FFNStats()]):
        torch.manual_seed(0)
        recorder = ScalarLogger()
        fit(ActSweepModule(**TINY), callbacks, tmp_path, max_steps=3, logger=recorder)
        logged.append(recorder.scalars["ffn/act_mean"])
    assert logged[0] == logged[1]


def test_ffn_stats_exact_on_known_preactivations(tmp_path):
    """fc weight 0 and bias b: every token's pre-activation is b, so the answers are known exactly."""
    module = ActSweepModule(**TINY, activation=["relu", "gelu"], lr=1e-30, weight_decay=0.0)  # lr must be positive; 1e-30 leaves the weights as set
    hidden = module.config.mlp_hidden
    biases = [torch.linspace(-1.0, 1.0, hidden), torch.linspace(-2.0, 0.5, hidden)]
    for block, b in zip(module.model.blocks, biases):
        torch.nn.init.zeros_(block.mlp.fc.weight)
        block.mlp.fc.bias.data.copy_(b)
    recorder, dm = ScalarLogger(), Tokens()
    fit(module, [FFNStats()], tmp_path, dm, max_steps=1, logger=recorder, limit_val_batches=2, val_check_interval=1)

    acts = [F.relu(biases[0]), F.gelu(biases[1])]
    for i, (b, a) in enumerate(zip(biases, acts)):
        assert recorder.last(f"ffn/inactive_frac/layer_{i}") == pytest.approx((b <= 0).float().mean().item(), abs=1e-7)
        assert recorder.last(f"ffn/act_mean/layer_{i}") == pytest.approx(a.mean().item(), rel=1e-5)
        assert recorder.last(f"ffn/dead_units/layer_{i}") == pytest.approx((b <= 0).float().mean().item(), abs=1e-7)
    mean_inactive = sum((b <= 0).float().mean().item() for b in biases) / 2
    assert recorder.last("ffn/inactive_frac") == pytest.approx(mean_inactive, abs=1e-7)

    x = next(iter(dm.train_dataloader()))[0]
    with capture(module.model, "blocks.*.hook_resid") as cache:
        module.model(x)
    for i in range(2):
        rms = cache[f"blocks.{i}.hook_resid"].pow(2).mean().sqrt().item()
        assert recorder.last(f"resid/rms/layer_{i}") == pytest.approx(rms, rel=1e-5)


# -- attention entropy -----------------------------------------------------------------------------


def test_probe_sees_the_attention_training_computes():
    """softmax(q kᵀ/√d) from the captured q, k times v reproduces the block's SDPA output, and the
    probe's entropies are those of that same q and k."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, bias="qk")).eval()
    idx = torch.randint(0, VOCAB, (3, T))
    seen: dict[str, torch.Tensor] = {}
    attn = model.blocks[1].attn
    handles = [
        attn.register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
        attn.out.register_forward_hook(lambda m, i, o: seen.update(y=i[0])),
    ]
    with torch.no_grad(), capture(model, "blocks.*.attn.hook_q", "blocks.*.attn.hook_k") as cache:
        model(idx)
    for h in handles:
        h.remove()
    q, k = cache["blocks.1.attn.hook_q"], cache["blocks.1.attn.hook_k"]
    C, H = model.cfg.n_embd, model.cfg.n_head
    v = F.linear(seen["x"], attn.qkv.weight)[..., 2 * C:].view(3, T, H, C // H).transpose(1, 2)
    mask = torch.full((T, T), float("-inf")).triu(1)
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // H) + mask, dim=-1)
    torch.testing.assert_close((p @ v).transpose(1, 2).reshape(3, T, C), seen["y"], atol=1e-5, rtol=1e-4)

    ent = probe_entropy(model, idx)
    assert ent.shape == (2, H)
    torch.testing.assert_close(ent[1].double(), reference_entropy(q, k).mean((0, 2)), atol=1e-5, rtol=1e-5)


def test_entropy_and_sink_share_one_probe_forward_and_each_logs_its_own_numbers(tmp_path, monkeypatch):
    """Two probe statistics run one eval forward per validation (the shared probe pass), and the sink
    share of each layer is the fp64 mean first-token probability of the final weights' queries t >= 1."""
    torch.manual_seed(0)
    module = ActSweepModule(**TINY)
    with torch.no_grad():
        for i, block in enumerate(module.model.blocks):
            block.attn.qkv.weight.mul_(30 * i + 1)
    forwards = []
    run = ScoresProbe.run
    monkeypatch.setattr(ScoresProbe, "run", lambda self, model, idx: forwards.append(sorted(self.reducers)) or run(self, model, idx))
    trainer = fit(module, [AttentionEntropy(), AttentionSink()], tmp_path, max_steps=4, limit_val_batches=1, val_check_interval=2)
    assert forwards == [["entropy", "max_logit", "sink_share"]] * 2  # two validations, one forward each
    events = EventAccumulator(trainer.log_dir)
    events.Reload()
    idx = Tokens().probe_batch()
    with torch.no_grad(), capture(module.model.eval(), "blocks.*.attn.hook_q", "blocks.*.attn.hook_k") as qk:
        module.model(idx)
    shares = []
    for i in range(2):
        q, k = qk[f"blocks.{i}.attn.hook_q"].double(), qk[f"blocks.{i}.attn.hook_k"].double()
        s = (q @ k.transpose(-1, -2) / math.sqrt(TINY["n_embd"] // 2)).masked_fill(torch.ones(T, T).triu(1).bool(), -math.inf)
        shares.append(torch.softmax(s, -1)[:, :, 1:, 0].mean().item())
        assert events.Scalars(f"attn/sink_share/layer_{i}")[-1].value == pytest.approx(shares[-1], rel=1e-5)
    assert abs(shares[0] - shares[1]) > 0.01  # the layers differ, so a mixed-up layer cannot pass
    assert events.Scalars("attn/sink_share")[-1].value == pytest.approx(sum(shares) / 2, rel=1e-5)
    assert len(events.Scalars("attn/entropy/layer_0")) == 2
    assert not module.model.blocks[0].attn.hook_k._forward_hooks  # the shared probe's hooks removed at teardown
    with pytest.raises(ValueError, match=r"\['sink_share'\] are subscribed twice: one AttentionSink per fit"):
        fit(module, [AttentionSink(), AttentionSink()], tmp_path, max_steps=1)


def test_attention_entropy_callback_logs_everything(tmp_path):
    module = ActSweepModule(**TINY)
    with torch.no_grad():  # heads far from uniform and unlike each other, so a mixed-up head cannot pass
        for i, block in enumerate(module.model.blocks):
            block.attn.qkv.weight.mul_(20 * (i + 1))
    trainer = fit(module, [AttentionEntropy()], tmp_path, max_steps=2, limit_val_batches=1, val_check_interval=2)
    events = EventAccumulator(trainer.log_dir)
    events.Reload()
    tags = events.Tags()
    assert "attn/entropy_heatmap" in tags["images"] and "attn/head_entropy" in tags["histograms"]
    idx = Tokens().probe_batch()
    with torch.no_grad(), capture(module.model.eval(), "blocks.*.attn.hook_q", "blocks.*.attn.hook_k") as qk:
        module.model(idx)
    # Every head's logged entropy against an fp64 softmax of the final weights' q and k.
    expected = torch.stack([reference_entropy(qk[f"blocks.{i}.attn.hook_q"], qk[f"blocks.{i}.attn.hook_k"]).mean((0, 2))
                            for i in range(2)])
    assert expected.std() > 0.05 * expected.mean()
    for i in range(2):
        for j in range(2):
            logged = events.Scalars(f"attn_heads/entropy/layer_{i}/head_{j}")[-1].value
            assert logged == pytest.approx(expected[i, j].item(), rel=1e-5)
    for i in range(2):  # each layer's mean head entropy over a uniform causal head's, ln(T!)/T
        logged = events.Scalars(f"attn/entropy_frac/layer_{i}")[-1].value
        assert logged == pytest.approx(expected[i].mean().item() / (math.lgamma(T + 1) / T), rel=1e-5)
    for i in range(2):
        s = qk[f"blocks.{i}.attn.hook_q"] @ qk[f"blocks.{i}.attn.hook_k"].transpose(-1, -2) / math.sqrt(TINY["n_embd"] // 2)
        peak = s.masked_select(torch.ones(T, T, dtype=torch.bool).tril()).abs().max().item()
        assert events.Scalars(f"attn/max_logit/layer_{i}")[-1].value == pytest.approx(peak, rel=1e-5)
    # Each band share counted by hand from the expected matrix, under both definitions.
    for name, top in (("max", expected.max().item()), ("uniform", math.lgamma(T + 1) / T)):
        shares = [events.Scalars(f"attn/heads_in_band/{name}_{q}")[-1].value
                  for q in ("bottom_quarter", "second_quarter", "third_quarter", "top_quarter")]
        by_hand = [sum(b * top / 4 <= e < (b + 1) * top / 4 or (b == 3 and e >= top) for e in expected.flatten().tolist()) / 4
                   for b in range(4)]
        assert shares == pytest.approx(by_hand)


# -- gradient norms --------------------------------------------------------------------------------


def test_grad_norms_equal_clip_grad_norm():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, activation="learnable_leaky_relu", slope_scope="global"))
    idx = torch.randint(0, VOCAB, (2, T))
    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    groups = grad_norm_groups(model)
    assert set(groups) == {"block_0", "block_1", "embeddings", "head", "slopes"}
    total, norms = grad_norms(groups)
    for key, params in groups.items():
        assert norms[key].item() == pytest.approx(torch.nn.utils.clip_grad_norm_(params, math.inf).item(), rel=1e-6)
    assert total.item() == pytest.approx(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf).item(), rel=1e-6)


class ClipNorm(L.Callback):
    """What `clip_grad_norm_` returns on the gradients Lightning is about to clip."""

    def __init__(self) -> None:
        self.totals: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.totals.append(torch.nn.utils.clip_grad_norm_(pl_module.parameters(), math.inf).item())


def test_logged_grad_norm_is_before_clipping(tmp_path):
    recorder, reference = ScalarLogger(), ClipNorm()
    fit(ActSweepModule(**TINY), [GradNorms(), reference], tmp_path, max_steps=3, logger=recorder, gradient_clip_val=1e-3)
    logged = [value for _, value in recorder.scalars["grad/norm"]]
    assert logged == pytest.approx(reference.totals, rel=1e-6)
    assert min(logged) > 1e-3  # so clipping did act, after we measured


# -- cost discipline -------------------------------------------------------------------------------


def test_no_statistics_work_on_non_logging_steps(tmp_path, monkeypatch):
    """7 steps logging every 3rd: statistics are computed on steps 2 and 5 only, in hooks too."""
    import actsweep.stats.ffn as ffn
    import actsweep.stats.slopes as slopes

    calls = []
    monkeypatch.setattr(ffn, "activation_sums", lambda a: calls.append(1) or activation_sums(a))
    monkeypatch.setattr(slopes, "slope_metrics", lambda model: calls.append(2) or slope_metrics(model))
    callbacks = [FFNStats(), GradNorms(), SlopeMonitor(), ThroughputMonitor(), AttentionEntropy(), DivergenceGuard(),
                 RunStatus()]
    module = ActSweepModule(**TINY, activation="learnable_leaky_relu")
    trainer = fit(module, callbacks, tmp_path, Tokens(n=64), max_steps=7, log_every_n_steps=3)
    ffn_cb, grad_cb, slope_cb, speed_cb, entropy_cb, guard, _ = callbacks
    assert (ffn_cb.computations, grad_cb.computations, slope_cb.computations) == (2, 2, 2)
    assert calls.count(1) == 2 * module.config.n_layer and calls.count(2) == 2  # FFN hooks, slope reads
    assert speed_cb.computations == 1  # the first logging step only starts the clock
    assert entropy_cb.computations == 0  # validation is off
    assert guard.checks == 2 + 2  # the logging steps, then the epoch end and train end (rare)
    assert read_status(trainer.log_dir)["status"] == "finished"


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_slope_monitor_silent_without_learnable_slopes(tmp_path, activation):
    monitor, recorder = SlopeMonitor(), ScalarLogger()
    fit(ActSweepModule(**TINY, activation=activation), [monitor], tmp_path, max_steps=2, logger=recorder)
    assert monitor.computations == 0
    assert "train/loss" in recorder.scalars and not [tag for tag in recorder.scalars if tag.startswith("slope/")]


# -- DDP: two gloo processes equal one process on the global batch ----------------------------------


def _rank_statistics(rank: int, world: int, port: int, acts: torch.Tensor, resid: torch.Tensor, out) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        a, r = acts.chunk(world, dim=1)[rank], resid.chunk(world, dim=1)[rank]  # (L, B/world, ...)
        summary = ffn_summary(torch.stack([activation_sums(x) for x in a]), torch.stack([square_sums(x) for x in r]))
        dead = dead_unit_share(torch.stack([fired_units(x) for x in a]))
        first_bad = all_reduce_(torch.tensor([100 + rank]), "min")
        results = {**summary, "dead": dead, "first_bad": first_bad}
        out.put((rank, {key: value.tolist() for key, value in results.items()}))  # no shared-memory tensors
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one_process():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 6, 5, 10, generator=g)  # (layers, batch, tokens, hidden)
    acts[1, :3, :, :4] = 1.0  # units 0-3 of layer 1 fire only in the first process's half
    acts[1, :, :, :4] -= 2.0
    resid = torch.randn(2, 6, 5, 8, generator=g)
    single = ffn_summary(torch.stack([activation_sums(x) for x in acts]), torch.stack([square_sums(x) for x in resid]))
    single["dead"] = dead_unit_share(torch.stack([fired_units(x) for x in acts]))

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")  # no re-import of torch and lightning in the workers
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank_statistics, args=(r, 2, port, acts, resid, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    for rank in range(2):
        for key, value in single.items():
            torch.testing.assert_close(torch.tensor(results[rank][key]), value, rtol=1e-6, atol=1e-7)
        assert results[rank]["first_bad"] == [100]


# -- slopes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layer", "neuron"])
def test_logged_slope_equals_parameter(tmp_path, scope):
    module = ActSweepModule(**TINY, activation="learnable_leaky_relu", slope_scope=scope, lr=0.05)
    trainer = fit(module, [SlopeMonitor()], tmp_path, max_steps=4, log_every_n_steps=2)
    events = EventAccumulator(trainer.log_dir)
    events.Reload()

    def logged(tag: str) -> float:
        return events.Scalars(tag)[-1].value

    if scope == "global":
        assert logged("slope/global") == pytest.approx(module.model.slopes.shared.item(), rel=1e-6)
        return
    for i, block in enumerate(module.model.blocks):
        slope = block.mlp.act.slope.detach()
        assert slope.ne(0.01).any()  # it trained
        if scope == "layer":
            assert logged(f"slope/layer_{i}") == pytest.approx(slope.item(), rel=1e-6)
        else:
            assert logged(f"slope/layer_{i}/mean") == pytest.approx(slope.mean().item(), rel=1e-5)
            assert logged(f"slope/layer_{i}/std") == pytest.approx(slope.std(correction=0).item(), rel=1e-4)


# -- divergence guard and run status ---------------------------------------------------------------


class Failing(ActSweepModule):
    """A NaN loss (or an exception) from batch `at` on."""

    def __init__(self, at: int, fail: type[BaseException] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at, self.fail = at, fail

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if batch_idx >= self.at:
            if self.fail is not None:
                raise self.fail("boom")
            return loss * float("nan")
        return loss


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    """NaN from step 3, checkpoints every 2 steps, logging every 50: the save due after step 3 is
    where the guard looks; it stops there and the step-2 checkpoint stays the last."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=-1)
    guard = DivergenceGuard()
    trainer = fit(Failing(3, **TINY), [guard, ckpt, RunStatus()], tmp_path, max_steps=20, log_every_n_steps=50,
                  enable_checkpointing=True, limit_val_batches=1, val_check_interval=3)
    assert trainer.global_step == 4  # stopped after the first bad step's batch
    status = read_status(trainer.log_dir)
    assert (status["status"], status["step"]) == ("diverged", 3)  # RunStatus's "finished" at fit end refused
    assert "non-finite training loss" in status["reason"] and math.isfinite(status["val_loss"])
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["epoch=0-step=2.ckpt", "last.ckpt"]
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_status_crashed_and_interrupted(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        fit(Failing(1, RuntimeError, **TINY), [RunStatus()], tmp_path / "a", logger=TensorBoardLogger(tmp_path / "a"))
    status = read_status(tmp_path / "a" / "lightning_logs" / "version_0")
    assert status["status"] == "crashed" and "RuntimeError: boom" in status["reason"] and status["step"] == 1

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C shutdown exits
            fit(Failing(2, KeyboardInterrupt, **TINY), [RunStatus()], tmp_path / "b", logger=TensorBoardLogger(tmp_path / "b"))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert read_status(tmp_path / "b" / "lightning_logs" / "version_0")["status"] == "interrupted"
    assert read_status(tmp_path / "nowhere") is None


def test_a_crashed_fit_leaves_no_hook_behind_armed_or_registered(tmp_path):
    """Lightning calls no teardown after an exception: the statistics remove their hooks themselves
    (else armed ones would keep every later compiled forward of the process eager)."""
    from actsweep.stats.common import _ARMED

    class Crash(ActSweepModule):
        def training_step(self, batch, batch_idx):
            if self.global_step == 1:  # a logging step: FFNStats' hooks are armed now
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    module = Crash(**TINY)
    with pytest.raises(RuntimeError, match="boom"):
        fit(module, [FFNStats(), AttentionEntropy(), AttentionSink()], tmp_path, max_steps=3)
    assert not _ARMED
    assert not any(m._forward_hooks for m in module.model.modules())
