"""actsweep: FFN activations × normalization × learning rate × attention in small decoder-only GPTs.

The public API is what this module lists in `__all__`; every other name is internal and may change.
The pipeline's stages are subpackages, imported one way (each may import only those below it):

    actsweep.cli      the `actsweep` command
    actsweep.study    sweep files, the runner, run logs, the report
    actsweep.export   to_transformer_lens (beside study: above train)
    actsweep.train    the LightningModule and the LightningCLI
    actsweep.stats    statistics callbacks over pure tensor functions
    actsweep.model    GPTConfig, GPT, registries, hook points     actsweep.data   corpus → tokens → windows
    errors, io, status (the bottom layer)

Names load on first use, so `import actsweep` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_API = {
    "GPT": "actsweep.model.gpt",
    "GPTConfig": "actsweep.model.gpt",
    "HookPoint": "actsweep.model.hooks",
    "hooks": "actsweep.model.hooks",
    "capture": "actsweep.model.hooks",
    "run_with_cache": "actsweep.model.hooks",
    "TextDataModule": "actsweep.data.module",
    "load_documents": "actsweep.data.sources",
    "get_tokenizer": "actsweep.data.tokenizers",
    "ActSweepModule": "actsweep.train.module",
    "RunStatus": "actsweep.train.run_status",
    "probe_entropy": "actsweep.stats.entropy",
    "head_entropy": "actsweep.stats.metrics",
    "causal_uniform_entropy": "actsweep.stats.metrics",
    "load_runs": "actsweep.study.report",
    "load_study": "actsweep.study.results",
    "to_transformer_lens": "actsweep.export",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'actsweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
