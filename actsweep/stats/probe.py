"""The probe pass: one eval forward on the probe batch whose attention scores every probe statistic reads.

Training keeps `scaled_dot_product_attention`; the probe is the only place that builds attention scores.
Hooks on each layer's q and k build that layer's causal scores s = q kᵀ/√d (B, H, T, T) as soon as its k
arrives and give them to every subscribed reducer, so only one layer's scores exist at a time.

A statistic of those scores (`AttentionEntropy`, `AttentionSink`, a new one) subclasses `ProbeStatistic`
and names its `reducers`. All of them on one model share one `ScoresProbe`: at a validation end the
first to ask runs the forward for every subscriber and the others read its results, so two probe
statistics cost one forward, not two.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Hashable, Mapping
from weakref import WeakKeyDictionary

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from actsweep.stats.base import Statistic
from actsweep.stats.common import ArmedHooks, eager_if_armed
from actsweep.stats.metrics import causal_scores

Reducer = Callable[[torch.Tensor], torch.Tensor]  # one layer's causal scores (B, H, T, T) -> its value


class ScoresProbe:
    """q/k hooks on every layer of `model` that, while a probe runs, reduce each layer's causal scores
    with every subscribed reducer. Register (construct) before `torch.compile`."""

    def __init__(self, model: nn.Module) -> None:
        self.hooks = ArmedHooks()
        self.hooks.register(model, "blocks.*.attn.hook_q", self._on_q)
        self.hooks.register(model, "blocks.*.attn.hook_k", self._on_k)
        self.reducers: dict[str, Reducer] = {}
        self._owners: dict[str, int] = {}  # reducer name -> id of the statistic that subscribed it
        self._q: torch.Tensor | None = None
        self._values: dict[str, dict[int, torch.Tensor]] = {}
        self._last: tuple[Hashable, dict[str, torch.Tensor]] | None = None

    def subscribe(self, owner: object, reducers: Mapping[str, Reducer]) -> None:
        """Add `owner`'s reducers (again: nothing changes); a name another owner holds is refused."""
        clash = sorted(name for name in reducers if self._owners.get(name, id(owner)) != id(owner))
        if clash:
            raise ValueError(f"probe reducers {clash} are subscribed twice: one {type(owner).__name__} per fit")
        self.reducers.update(reducers)
        self._owners.update(dict.fromkeys(reducers, id(owner)))
        self.forget()

    def unsubscribe(self, owner: object) -> None:
        for name in [n for n, o in self._owners.items() if o == id(owner)]:
            del self.reducers[name], self._owners[name]
        self.forget()

    def forget(self) -> None:
        """Drop the cached results (the weights may have changed)."""
        self._last = None

    def _on_q(self, q: torch.Tensor, layer: int) -> None:
        self._q = q

    def _on_k(self, k: torch.Tensor, layer: int) -> None:
        s = causal_scores(self._q, k)
        for name, reduce in self.reducers.items():
            self._values.setdefault(name, {})[layer] = reduce(s)
        self._q = None  # this layer's q and scores go before the next layer's are built

    def run(self, model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each reducer's values stacked over layers, (n_layer, ...), of `model` on token ids `idx` in
        eval mode without gradients; the mode is restored."""
        was_training = model.training
        model.eval()
        self.hooks.armed = "probe"
        try:
            with torch.no_grad(), eager_if_armed(model):
                model(idx)
            return {name: torch.stack([by_layer[i] for i in sorted(by_layer)]) for name, by_layer in self._values.items()}
        finally:
            self.hooks.armed = None
            self._values.clear()
            model.train(was_training)

    def results(self, key: Hashable, model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """`run`'s results, computed once per `key` (the first subscriber to ask runs it)."""
        if self._last is None or self._last[0] != key:
            self._last = (key, self.run(model, idx))
        return self._last[1]

    def remove(self) -> None:
        self.hooks.remove()


_SHARED: WeakKeyDictionary[nn.Module, ScoresProbe] = WeakKeyDictionary()


class ProbeStatistic(Statistic):
    """A statistic of the probe batch's attention scores, computed in the shared probe pass.

    Subclasses name their `reducers` (unique names: each layer's scores -> a tensor) and read their
    values with `probe(trainer, pl_module)`.

    Args:
        probe_windows: windows asked of `probe_batch(n)` (None: the data module's default).
    """

    reducers: ClassVar[Mapping[str, Reducer]] = {}

    def __init__(self, probe_windows: int | None = None) -> None:
        super().__init__()
        self.probe_windows = probe_windows
        self._idx: torch.Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model = pl_module.model
        if model not in _SHARED:
            _SHARED[model] = ScoresProbe(model)
        _SHARED[model].subscribe(self, self.reducers)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._idx = None  # the next fit's data module (and device) gives the next probe batch
        probe = _SHARED.get(pl_module.model)
        if probe is None:
            return
        probe.unsubscribe(self)
        if not probe.reducers:  # the last subscriber: a later fit registers afresh
            probe.remove()
            del _SHARED[pl_module.model]

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        probe = _SHARED.get(pl_module.model)
        if probe is not None:
            probe.forget()

    def probe(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[dict[str, torch.Tensor], int] | None:
        """Every subscribed reducer's per-layer values on the probe batch (in the precision training
        computes q and k in) and the windows' length T; None, with a warning once, without a probe batch."""
        if self._idx is None:
            datamodule = getattr(trainer, "datamodule", None)
            if not hasattr(datamodule, "probe_batch"):
                rank_zero_warn(f"{type(self).__name__} needs a data module with `probe_batch()`; skipping the probe")
                return None
            self._idx = datamodule.probe_batch(self.probe_windows).to(pl_module.device)
        key = (str(trainer.state.stage), trainer.global_step, self.probe_windows)
        with trainer.precision_plugin.forward_context():
            values = _SHARED[pl_module.model].results(key, pl_module.model, self._idx)
        self.computations += 1
        return values, self._idx.shape[1]
