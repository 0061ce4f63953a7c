"""Statistics callbacks; enable them from a LightningCLI config under `trainer.callbacks`.

Imports the model (hook points, slope names) and the bottom layer (`actsweep.status`); never the
training module, the studies or the CLI.

During training each works only on the steps where Lightning logs scalars, with one host transfer
there (`DivergenceGuard` also folds each step's loss into a device-side flag, without a transfer);
dead units and attention entropy are measured at the end of each validation.
"""

from actsweep.stats.divergence import DivergenceGuard
from actsweep.stats.entropy import AttentionEntropy, probe_entropy
from actsweep.stats.ffn import FFNStats
from actsweep.stats.gradients import GradNorms
from actsweep.stats.metrics import causal_uniform_entropy, entropy_bands, head_entropy
from actsweep.stats.nonfinite import NonFiniteCounts
from actsweep.stats.norms import NormStats
from actsweep.stats.precision import LossScaleMonitor
from actsweep.stats.slopes import SlopeMonitor
from actsweep.stats.throughput import ThroughputMonitor
from actsweep.stats.views import TensorBoardViews

__all__ = [
    "AttentionEntropy",
    "DivergenceGuard",
    "FFNStats",
    "GradNorms",
    "NonFiniteCounts",
    "NormStats",
    "LossScaleMonitor",
    "SlopeMonitor",
    "TensorBoardViews",
    "ThroughputMonitor",
    "causal_uniform_entropy",
    "entropy_bands",
    "head_entropy",
    "probe_entropy",
]
