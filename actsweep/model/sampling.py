"""What `GPT.generate` accepts, checked in one place (also before `actsweep sample` loads a checkpoint)."""

from __future__ import annotations

import math

from actsweep.errors import ConfigError


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    """`GPT.generate`'s settings, checked before a checkpoint is loaded for them (`actsweep sample`)."""
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 0 <= temperature < math.inf:
        raise ConfigError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 (or None: every token), got {top_k}")
