"""The model: `GPTConfig` (every architectural default, validated), the GPT, its switch registries
(activations, norms, bias sites, attention kernels) and hook points.

Imports only `actsweep.errors`; nothing here knows about Lightning, data or statistics.
"""

from actsweep.model.gpt import GPT, GPTConfig
from actsweep.model.hooks import HookPoint, capture, hooks, run_with_cache

__all__ = ["GPT", "GPTConfig", "HookPoint", "capture", "hooks", "run_with_cache"]
