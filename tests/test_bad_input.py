"""Bad input through the `actsweep` command: one line naming the problem and the fix, exit status 2,
in seconds, and nothing an earlier run left is touched. Offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
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
    run = tmp_path_factory.mktemp("earlier")
    config = finished_fit(run)
    text = (run / "corpus.txt").read_text()
    (inputs / "empty.txt").write_text("")
    (inputs / "separators.txt").write_text(f"{SEP}\n{SEP}  \n{SEP}")
    (inputs / "body.jsonl").write_text(json.dumps({"body": text}) + "\n")
    (inputs / "broken.jsonl").write_text(f'{json.dumps({"text": text})}\n\n{{"text": "cut off\n')
    (inputs / "not.parquet").write_text(text)
    pq.write_table(pa.table({"body": ["a story"], "id": [1]}), inputs / "body.parquet")
    (inputs / "text.ckpt").write_text("not a checkpoint")
    checkpoint = (run / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").read_bytes()
    (inputs / "truncated.ckpt").write_bytes(checkpoint[: len(checkpoint) // 2])
    sweeps = {
        "unknown_key": {"sweeps": 2}, "empty_grid": {"grid": {}}, "seeds_int": {"seeds": 5},
        "misspelt_key": {"grid": {"model.activatoin": ["relu"]}}, "wrong_type": {"grid": {"model.n_layer": ["two"]}},
    }
    for name, change in sweeps.items():
        spec = {"name": "x", "base": str(config), "grid": {"model.lr": [1e-3]}, "seeds": [0], **change}
        (inputs / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (inputs / "syntax.yaml").write_text(f"name: x\nbase: {config}\ngrid: {{model.lr: [0.001]\nseeds: [0]\n")
    return inputs, config, snapshot(run)


FIT_CASES = [
    (["--model.activation", "swish"], f"unknown activation 'swish'; {VALID_ACTIVATIONS}"),
    (["--model.norm", "batchnorm"], "unknown norm 'batchnorm'; choose one of layernorm, rmsnorm, none"),
    (["--model.slope_scope", "head"], "unknown slope_scope 'head'; choose one of global, layer, neuron"),
    (["--model.n_head", "3"], "n_embd (32) must be divisible by n_head (3)"),
    (["--model.activation", "[relu, gelu, relu]"], "got 3 names for n_layer=2"),
    (["--model.activatoin", "relu"], "unrecognized arguments: --model.activatoin relu"),
    (["--model.n_layer", "two"], 'Parser key "model.n_layer"'),
    (["--model.lr", "-1"], "lr and eps must be positive, got lr=-1.0"),
    (["--model.lr", "0"], "lr and eps must be positive, got lr=0.0"),
    (["--model.lr", "nan"], 'Parser key "model.lr"'),
    (["--model.lr", "inf"], 'Parser key "model.lr"'),
    (["--model.betas", "[0.9, 1.0]"], "betas must both lie in [0, 1), got (0.9, 1.0)"),
    (["--model.betas", "[-0.1, 0.9]"], "betas must both lie in [0, 1)"),
    (["--model.weight_decay", "-0.1"], "weight_decay must be >= 0, got -0.1"),
    (["--model.warmup", "-1"], "warmup must be >= 0, got -1.0"),
    (["--model.min_lr_ratio", "2"], "min_lr_ratio must lie in [0, 1], got 2.0"),
    (["--model.schedule", "wavy"], "unknown schedule 'wavy'; choose one of cosine, linear, constant"),
    (["--trainer.max_steps", "-5"], "`max_steps` must be a non-negative integer or -1"),
    (["--data.block_size", "55000"], "fewer than block_size + 1 = 55001; lower --data.block_size"),
    (["--data.block_size", "100000000"], "block_size 100000000 is longer than the whole corpus"),
    (["--data.source", "{inputs}/missing.txt"], "missing.txt' does not exist; accepted: 'python-stdlib', a local"),
    (["--data.source", "{inputs}/empty.txt"], "empty.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/separators.txt"], "separators.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/body.jsonl"], "has no text column 'text'; columns: ['body']. Pass --data.text_column"),
    (["--data.source", "{inputs}/broken.jsonl"], "broken.jsonl line 3 is not JSON"),
    (["--data.source", "{inputs}/body.parquet"], "has no text column 'text'; columns: ['body', 'id']"),
    (["--data.source", "{inputs}/not.parquet"], "not.parquet is not a readable parquet file"),
    (["--data.source", "roneneldan/TinyStories"], HUB_HINT),
    (["--config", "{inputs}/missing.yaml"], "missing.yaml"),
    (["--ckpt_path", "{inputs}/missing.ckpt"], "--ckpt_path {inputs}/missing.ckpt does not exist"),
    (["--ckpt_path", "{inputs}/text.ckpt"], "text.ckpt is not a readable checkpoint"),
    (["--ckpt_path", "{inputs}/truncated.ckpt"], "truncated.ckpt is not a readable checkpoint"),
    (["--ckpt_path", "{run}/checkpoints/last.ckpt", "--model.n_embd", "64"],
     "was trained with other model settings (n_embd: 32 -> 64)"),
    # aimed at the finished run's own folder: refused before it is touched
    (["--trainer.logger.version", "version_0", "--model.lr", "-1"], "lr and eps must be positive"),
    (["--trainer.logger.version", "version_0"], "version_0 already holds a finished run; choose another"),
]
SWEEP_CASES = [
    ("unknown_key.yaml", [], "unknown key 'sweeps'; allowed keys: name, base, grid, seeds"),
    ("empty_grid.yaml", [], "'grid' is missing or empty"),
    ("seeds_int.yaml", [], "'seeds' is a list of integers, got 5"),
    ("syntax.yaml", [], "cannot read sweep file"),
    ("missing.yaml", [], "cannot read sweep file"),
    ("misspelt_key.yaml", [], "run activatoin=relu,seed=0 would not start: unrecognized arguments: --model.activatoin"),
    ("wrong_type.yaml", [], 'run n_layer=two,seed=0 would not start: Parser key "model.n_layer"'),
    ("unknown_key.yaml", ["--jobs", "0"], "--jobs must be at least 1"),
    ("unknown_key.yaml", ["--bogus"], "unrecognized arguments: --bogus"),
]


def test_the_table_holds_thirty_bad_inputs():
    assert len(FIT_CASES) + len(SWEEP_CASES) >= 30


@pytest.mark.parametrize("args, phrase", FIT_CASES)
def test_bad_fit_input_is_one_line_and_changes_nothing(earlier, capsys, args, phrase):
    inputs, config, before = earlier
    run = config.parent / "logs" / "tiny" / "version_0"
    line = fit_error(["fit", "--config", str(config), *(a.format(inputs=inputs, run=run) for a in args)], capsys)
    assert phrase.format(inputs=inputs) in line
    assert snapshot(config.parent) == before


@pytest.mark.parametrize("sweep_file, args, phrase", SWEEP_CASES)
def test_bad_sweep_input_is_one_line_and_changes_nothing(earlier, capsys, sweep_file, args, phrase):
    inputs, config, before = earlier
    root = ["--root", str(config.parent / "sweeps")]
    assert phrase in fit_error(["sweep", str(inputs / sweep_file), *root, *args], capsys)
    assert snapshot(config.parent) == before


def test_non_utf8_corpus_is_decoded_with_replacement_counted_and_trains(tmp_path, capsys):
    """Decision (data engineer): undecodable bytes become U+FFFD, counted in one warning; training goes on."""
    config = write_config(tmp_path)
    corpus = tmp_path / "corpus.txt"
    text = corpus.read_bytes()
    corpus.write_bytes(b"\xff".join([text[:1000], text[1000:2000], text[2000:3000], text[3000:]]))
    with pytest.warns(UserWarning, match=r"corpus.txt: 3 undecodable byte sequence\(s\) were not UTF-8"):
        code, _ = run_main(["fit", "--config", str(config), "--trainer.max_steps", "2"], capsys)
    assert code == 0 and (tmp_path / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").is_file()
