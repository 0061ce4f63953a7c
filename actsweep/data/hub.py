"""Hugging Face hub datasets: what we know of the studies' datasets, and reading one that is
reachable or cached, failing at once (not after a minute of retries) when it is neither."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from actsweep.errors import ActSweepError, ConfigError

class DataSourceError(ActSweepError, RuntimeError):
    """A source cannot be read (e.g. the hub is unreachable); the message says what to do instead."""


@dataclass(frozen=True)
class HubDataset:
    """What we know about a hub dataset: its text column, the split its documents are in (when it is
    a validation companion, e.g. codeparrot-ds-valid's only split is "validation") and where its
    validation documents are."""

    column: str
    val_split: str | None = None
    val_source: str | None = None
    split: str = "train"


HUB_DATASETS = {
    "roneneldan/TinyStories": HubDataset(column="text", val_split="validation"),
    "huggingface-course/codeparrot-ds-train": HubDataset(
        column="content", val_source="huggingface-course/codeparrot-ds-valid"
    ),
    "huggingface-course/codeparrot-ds-valid": HubDataset(column="content", split="validation"),
}


def documents_split(name: str) -> str:
    """The split to read when ``name`` is a whole source (``train`` unless known otherwise)."""
    return HUB_DATASETS.get(name, HubDataset("text")).split


def _env_offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_endpoint() -> str:
    """The hub address the Hugging Face libraries use: ``HF_ENDPOINT`` (a mirror) or huggingface.co."""
    import huggingface_hub.constants

    return huggingface_hub.constants.ENDPOINT


def hub_reachable(timeout: float = 2.0) -> bool:
    """Fast probe (one HEAD request) so that offline machines fail at once instead of retrying.

    Asks the endpoint the Hugging Face libraries use (``HF_ENDPOINT``) through huggingface_hub's own
    HTTP session, so proxies (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and its TLS settings apply
    as they do for the download. Any HTTP answer, even an error status, means reachable."""
    if _env_offline():
        return False
    from huggingface_hub import get_session

    try:
        get_session().head(hub_endpoint(), timeout=timeout)
    except Exception:  # noqa: BLE001 - any transport failure (DNS, refused, proxy, TLS, timeout): unreachable
        return False
    return True


def hub_cached(name: str) -> bool:
    """Whether ``datasets`` already holds ``name`` locally (then it can load without network)."""
    import datasets.config
    import huggingface_hub.constants

    return (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).exists() or (
        Path(huggingface_hub.constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}"
    ).exists()


def read_hub(name: str, split: str, text_column: str | None) -> list[str]:
    online = hub_reachable()
    if not online and not hub_cached(name):
        raise DataSourceError(
            f"cannot load hub dataset {name!r}: the Hugging Face hub ({hub_endpoint()}) is unreachable (offline, "
            "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set, or check HF_ENDPOINT / HTTPS_PROXY) and the dataset is not "
            "in the local cache. "
            "Point --data.source at local files instead, e.g. "
            "--data.source path/to/TinyStories-train.txt (.txt split on --data.separator, or "
            ".jsonl/.parquet with --data.text_column), or a directory/glob of them."
        )
    import datasets

    column = text_column or HUB_DATASETS.get(name, HubDataset("text")).column
    # Offline with a local copy: tell datasets so, or it spends a minute retrying the network.
    offline = contextlib.nullcontext() if online else mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True)
    with offline:
        dataset = datasets.load_dataset(name, split=split, streaming=False)
    if column not in dataset.column_names:
        raise ConfigError(f"hub dataset {name!r} has no text column {column!r}; columns: {dataset.column_names}; "
                          "pass --data.text_column <one of those>")
    return list(dataset[column])
