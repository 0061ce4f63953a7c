"""The package's shape: imports run one way with no circle, small files, one place for each model
default, a public API, window arithmetic usable without a data module, and old checkpoints loading."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import actsweep
from actsweep.data import windows

PACKAGE = Path(actsweep.__file__).parent
# Each module may import only modules of its own layer or below.
LAYERS = {"errors": 0, "io": 0, "declarations": 0, "resources": 1, "status": 1, "board": 1, "model": 2, "data": 2, "stats": 3, "train": 4, "study": 5, "export": 5, "sample": 5,
          "cli": 6, "__init__": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every actsweep module imported anywhere in the file, function bodies included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("actsweep")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actsweep"):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:  # `from actsweep.data import cache` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() else node.module)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_imports_run_one_way() -> None:
    upward = [f"{m} -> {i}" for m, deps in graph().items() for i in deps
              if m != "actsweep" and layer(i) > layer(m)]
    assert not upward, upward


def test_no_import_circle() -> None:
    edges = {m: {d for d in deps if d != m and d != "actsweep"} for m, deps in graph().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in edges:
        if module not in state:
            visit(module, [module])


def test_the_checker_finds_a_circle(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from actsweep.study.runner import main\n")
    assert imports_of(bad) == {"actsweep.study.runner"}


def test_no_source_file_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_public_api_resolves() -> None:
    """Each public name is the object its defining module holds (imported here directly, not via `_API`)."""
    from actsweep.data.module import TextDataModule
    from actsweep.data.sources import load_documents
    from actsweep.data.tokenizers import get_tokenizer
    from actsweep.export import to_transformer_lens
    from actsweep.model.gpt import GPT, GPTConfig
    from actsweep.model.hooks import HookPoint, capture, hooks, run_with_cache
    from actsweep.stats.entropy import probe_entropy
    from actsweep.stats.metrics import causal_uniform_entropy, head_entropy
    from actsweep.study.report import load_runs
    from actsweep.study.results import load_study
    from actsweep.train.module import ActSweepModule
    from actsweep.train.run_status import RunStatus

    public = [GPT, GPTConfig, HookPoint, capture, hooks, run_with_cache, TextDataModule, load_documents, get_tokenizer, ActSweepModule,
              probe_entropy, head_entropy, causal_uniform_entropy, load_runs, load_study, to_transformer_lens,
              RunStatus]
    assert actsweep.__all__ == sorted(value.__name__ for value in public)
    for value in public:
        assert getattr(actsweep, value.__name__) is value, value.__name__
    with pytest.raises(AttributeError):
        actsweep.not_a_name  # noqa: B018


def test_command_line_start_does_not_import_lightning() -> None:
    code = "import sys, actsweep.cli, actsweep.study.runner; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_new_config_field_is_an_option_with_no_other_edit(tmp_path: Path) -> None:
    copy = tmp_path / "actsweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    gpt = copy / "model" / "gpt.py"
    anchor = '    pad_vocab_multiple: int = 1\n'
    text = gpt.read_text()
    assert anchor in text
    gpt.write_text(text.replace(anchor, anchor + '    zz_new_switch: float = 0.625\n    """A switch added by a test."""\n'))
    help_text = subprocess.run([sys.executable, "-m", "actsweep.cli", "fit", "--help"], cwd=tmp_path,
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}).stdout
    option = help_text[help_text.rindex("--model.zz_new_switch ZZ_NEW_SWITCH"):]
    assert "A switch added by a test." in option[:200] and "default: 0.625" in option[:200]


# Hyper-parameters as a checkpoint written before the layout change stored them (commit b6e4c07).
OLD_HPARAMS = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "mlp_hidden": None, "activation": "relu", "slope_scope": "layer",
    "slope_init": 0.01, "leaky_slope": 0.01, "norm": "none", "final_norm": "layernorm", "norm_eps": 1e-05,
    "bias": "all", "sdpa_backend": "math", "dropout": 0.0, "tie_weights": True, "init_std": 0.02,
    "pad_vocab_multiple": 1, "lr": 0.003, "betas": [0.9, 0.95], "eps": 1e-08, "weight_decay": 0.1,
    "slope_weight_decay": 0.0, "schedule": "cosine", "warmup": 0.05, "min_lr_ratio": 0.1, "compile": False,
    "block_size": 16, "vocab_size": 50, "_instantiator": "lightning.pytorch.cli.instantiate_module",
}


def test_a_checkpoint_from_before_the_move_loads(tmp_path: Path) -> None:
    from actsweep import ActSweepModule

    hparams = {k: v for k, v in OLD_HPARAMS.items() if k != "_instantiator"}
    state = ActSweepModule(**hparams).state_dict()
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": OLD_HPARAMS, "hparams_name": "kwargs",
                "pytorch-lightning_version": "2.6.6"}, path)
    module = ActSweepModule.load_from_checkpoint(path)
    assert module.config.activation == "relu" and module.config.norm == "none" and module.hparams.lr == 0.003
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())


# -- window arithmetic, without a data module --------------------------------------------------


def test_random_windows_shard_the_global_batch_and_never_overlap() -> None:
    whole = windows.random_window_starts(seed=3, step=11, n_tokens=10_000, block_size=31, batch_size=12)
    shards = [windows.random_window_starts(3, 11, 10_000, 31, 3, rank, 4) for rank in range(4)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(whole.tolist())
    ordered = np.sort(whole)
    assert (np.diff(ordered) >= 32).all() and ordered[-1] + 32 <= 10_000
    assert len({int(s) % 32 for s in whole}) == 1  # one shift per step
    assert not np.array_equal(windows.random_window_starts(3, 12, 10_000, 31, 12), whole)
    assert np.array_equal(windows.random_window_starts(3, 11, 10_000, 31, 12), whole)


def test_document_windows_are_distinct_chunks() -> None:
    chunks = np.arange(0, 500, 5)
    got = windows.document_window_starts(0, 4, chunks, batch_size=10, rank=1, world_size=2)
    assert len(set(got.tolist())) == 10 and set(got.tolist()) <= set(chunks.tolist())


def test_validation_windows_are_evenly_spread() -> None:
    assert windows.val_window_starts(4, n_tokens=100, block_size=9).tolist() == [0, 30, 60, 90]
    assert windows.val_window_starts(50, n_tokens=100, block_size=9).tolist() == list(range(0, 91, 10))
    chunks = np.array([0, 7, 20, 33, 41])
    assert windows.val_window_starts(3, 0, 6, chunk_starts=chunks).tolist() == [0, 20, 41]


def test_too_few_windows_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="cannot fill a global batch of 8"):
        windows.document_window_starts(0, 0, np.arange(5), batch_size=4, world_size=2)
