"""Bad input through the `actsweep` command: one line naming the problem and the fix, exit status 2,
in seconds, and nothing an earlier run left is touched. Offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import finished_fit, fit_error, run_main, snapshot, write_config

SEP = "<|endoftext|>"
VALID_ACTIVATIONS = "choose one of relu, gelu, gelu_tanh, leaky_relu, learnable_leaky_relu"
HUB_HINT = "Point --data.source at local files instead"


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """(folder of bad input files, config of a finished fit, snapshot of that fit's folder)."""
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "empty.txt").write_text("")
    (inputs / "separators.txt").write_text(f"{SEP}\n{SEP}  \n{SEP}")
    (inputs / "body.jsonl").write_text('{"body": "a story"}\n')
    pq.write_table(pa.table({"body": ["a story"], "id": [1]}), inputs / "body.parquet")
    (inputs / "unknown_key.yaml").write_text(yaml.safe_dump(
        {"name": "x", "base": str(inputs / "empty.txt"), "grid": {"model.lr": [1e-3]}, "seeds": [0], "sweeps": 2}))
    (inputs / "empty_grid.yaml").write_text(yaml.safe_dump(
        {"name": "x", "base": str(inputs / "empty.txt"), "grid": {}, "seeds": [0]}))
    run = tmp_path_factory.mktemp("earlier")
    return inputs, finished_fit(run), snapshot(run)


@pytest.mark.parametrize("args, phrase", [
    (["--model.activation", "swish"], f"unknown activation 'swish'; {VALID_ACTIVATIONS}"),
    (["--model.norm", "batchnorm"], "unknown norm 'batchnorm'; choose one of layernorm, rmsnorm, none"),
    (["--model.slope_scope", "head"], "unknown slope_scope 'head'; choose one of global, layer, neuron"),
    (["--model.n_head", "3"], "n_embd (32) must be divisible by n_head (3)"),
    (["--model.activation", "[relu, gelu, relu]"], "got 3 names for n_layer=2"),
    (["--data.block_size", "100000"], "fewer than block_size + 1 = 100001; lower --data.block_size"),
    (["--data.source", "{inputs}/missing.txt"], "missing.txt' does not exist; accepted: 'python-stdlib', a local"),
    (["--data.source", "{inputs}/empty.txt"], "empty.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/separators.txt"], "separators.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/body.jsonl"], "has no text column 'text'; columns: ['body']. Pass --data.text_column"),
    (["--data.source", "{inputs}/body.parquet"], "has no text column 'text'; columns: ['body', 'id']"),
    (["--data.source", "roneneldan/TinyStories"], HUB_HINT),
])
def test_bad_fit_input_is_one_line_and_changes_nothing(earlier, capsys, args, phrase):
    inputs, config, before = earlier
    start = time.monotonic()
    line = fit_error(["fit", "--config", str(config), *(a.format(inputs=inputs) for a in args)], capsys)
    assert phrase in line
    assert time.monotonic() - start < 5
    assert snapshot(config.parent) == before


@pytest.mark.parametrize("sweep_file, phrase", [
    ("unknown_key.yaml", "unknown key 'sweeps'; allowed keys: name, base, grid, seeds"),
    ("empty_grid.yaml", "'grid' is missing or empty"),
])
def test_bad_sweep_file_is_one_line(earlier, capsys, sweep_file, phrase):
    inputs, _, _ = earlier
    assert phrase in fit_error(["sweep", str(inputs / sweep_file), "--dry-run"], capsys)


def test_non_utf8_corpus_is_decoded_with_replacement_counted_and_trains(tmp_path, capsys):
    """Decision (data engineer): undecodable bytes become U+FFFD, counted in one warning; training goes on."""
    config = write_config(tmp_path)
    corpus = tmp_path / "corpus.txt"
    text = corpus.read_bytes()
    corpus.write_bytes(b"\xff".join([text[:1000], text[1000:2000], text[2000:3000], text[3000:]]))
    with pytest.warns(UserWarning, match=r"corpus.txt: 3 undecodable byte sequence\(s\) were not UTF-8"):
        code, _ = run_main(["fit", "--config", str(config), "--trainer.max_steps", "2"], capsys)
    assert code == 0 and (tmp_path / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").is_file()
