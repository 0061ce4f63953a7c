"""Statistics callbacks; enable them from a LightningCLI config under `trainer.callbacks`.

During training each works only on the steps where Lightning logs scalars, with one host transfer
there (`DivergenceGuard` also folds each step's loss into a device-side flag, without a transfer);
dead units and attention entropy are measured at the end of each validation.
"""

from .divergence import DivergenceGuard
from .entropy import AttentionEntropy, causal_uniform_entropy, entropy_bands, head_entropy, probe_entropy
from .ffn import FFNStats
from .gradients import GradNorms
from .slopes import SlopeMonitor
from ..status import read_status, write_status
from .throughput import ThroughputMonitor

__all__ = [
    "AttentionEntropy",
    "DivergenceGuard",
    "FFNStats",
    "GradNorms",
    "SlopeMonitor",
    "ThroughputMonitor",
    "causal_uniform_entropy",
    "entropy_bands",
    "head_entropy",
    "probe_entropy",
    "read_status",
    "write_status",
]
