"""Bad input through the `actsweep` command: one line naming the problem and the fix, exit status 2,
in seconds, and nothing an earlier run left is touched. Offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from actsweep import cli
from actsweep.data.module import WINDOWS, WindowKind
from actsweep.data.windows import SAMPLINGS, VAL_SAMPLINGS, Sampling, ValSampling
from actsweep.model.activations import ACTIVATIONS, SLOPE_SCOPES, ActivationName, SlopeScope
from actsweep.model.attention import ATTENTION, AttentionName
from actsweep.model.entropy_reg import (ENTROPY_MAXIMA, ENTROPY_REDUCTIONS, THRESHOLD_SCOPES, EntropyMax,
                                        EntropyReduction, ThresholdScope)
from actsweep.model.gpt import BIAS_SITES, DROPOUT_SITES, BiasSites, DropoutSites
from actsweep.model.init import INITS, InitName
from actsweep.model.norms import NORMS, QK_NORMS, NormName, QKNormName
from actsweep.train.module import MATMUL_PRECISIONS, MatmulPrecision
from actsweep.train.optim import ADAMW_KERNELS, DECAY_SCOPES, OPTIMIZERS, AdamWKernel, DecayScope, OptimizerName
from actsweep.train.schedules import DECAYS, ScheduleName
from helpers import finished_fit, fit_error, run_main, snapshot, write_config

SEP = "<|endoftext|>"
VALID_ACTIVATIONS = "choose one of relu, gelu, gelu_tanh, leaky_relu, learnable_leaky_relu, relu2, silu"
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
    (inputs / "one.txt").write_text(text)  # one document: training has it, validation has none
    (inputs / "body.jsonl").write_text(json.dumps({"body": text}) + "\n")
    (inputs / "broken.jsonl").write_text(f'{json.dumps({"text": text})}\n\n{{"text": "cut off\n')
    (inputs / "not.parquet").write_text(text)
    pq.write_table(pa.table({"body": ["a story"], "id": [1]}), inputs / "body.parquet")
    (inputs / "text.ckpt").write_text("not a checkpoint")
    checkpoint = (run / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt").read_bytes()
    (inputs / "truncated.ckpt").write_bytes(checkpoint[: len(checkpoint) // 2])
    for name, change in SWEEP_FILES.items():
        spec = {"name": "x", "base": str(config), "grid": {"model.lr": [1e-3]}, "seeds": [0], **change}
        (inputs / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    (inputs / "syntax.yaml").write_text(f"name: x\nbase: {config}\ngrid: {{model.lr: [0.001]\nseeds: [0]\n")
    (inputs / "repeated.yaml").write_text(f"name: x\nbase: {config}\ngrid: {{model.lr: [0.001]}}\nseeds: [0]\n"
                                          "grid: {model.lr: [0.01]}\n")
    # a second `model:` section would replace the first whole (n_embd back to its default, 384)
    (inputs / "two_models.yaml").write_text(f"{config.read_text()}model:\n  activation: relu\n")
    spec = {"name": "x", "base": str(inputs / "two_models.yaml"), "grid": {"model.lr": [1e-3]}, "seeds": [0]}
    (inputs / "repeated_base.yaml").write_text(yaml.safe_dump(spec))
    return inputs, config, snapshot(run)


SWEEP_FILES = {
    "unknown_key": {"sweeps": 2}, "empty_grid": {"grid": {}}, "seeds_int": {"seeds": 5},
    "misspelt_key": {"grid": {"model.activatoin": ["relu"]}}, "wrong_type": {"grid": {"model.n_layer": ["two"]}},
    "labels_list": {"labels": ["relu", "gelu"]}, "fixed_list": {"fixed": ["trainer.max_steps", 5]},
    "base_number": {"base": 42}, "seeds_negative": {"seeds": [0, -1]}, "seeds_huge": {"seeds": [2**40]},
    "seeds_text": {"seeds": ["0", "1"]}, "heads": {"grid": {"model.n_head": [2, 3]}},
    "steps": {"grid": {"trainer.max_steps": [-5]}}, "empty_values": {"grid": {"model.lr": []}},
    "lr_negative": {"grid": {"model.lr": [1e-3, -1e-3]}}, "huge_mlp": {"grid": {"model.mlp_hidden": [10**10]}},
    "fixed_val_windows": {"fixed": {"data.val_windows": 0}},
    "comparison_key": {"comparisons": [{"key": "model.activation", "a": "relu", "b": "gelu"}]},
    "comparison_value": {"comparisons": [{"key": "model.lr", "a": 1e-3, "b": 1e-2}]},
    "choice": {"grid": {"model.norm": ["layernorm", "batchnorm"]}},
}


FIT_CASES = [
    # a value outside a switch's choices is refused by the parser, from the switch's Literal type
    (["--model.activation", "swish"], f"unknown --model.activation 'swish'; {VALID_ACTIVATIONS}"),
    (["--model.activation", "[relu, swish]"], f"unknown --model.activation 'swish'; {VALID_ACTIVATIONS}"),
    (["--model.norm", "batchnorm"], "unknown --model.norm 'batchnorm'; choose one of layernorm, rmsnorm, none, dyt"),
    (["--model.slope_scope", "head"], "unknown --model.slope_scope 'head'; choose one of global, layer, neuron"),
    (["--model.sdpa_backend", "fast"], "unknown --model.sdpa_backend 'fast'; choose one of adaptive, auto, flash"),
    (["--model.optimizer", "sgd"], "unknown --model.optimizer 'sgd'; choose one of adamw, adamw_hf"),
    (["--data.sampling", "epochs"], "unknown --data.sampling 'epochs'; choose one of step, epoch, uniform"),
    (["--data.split_by", "line"], "unknown --data.split_by 'line'; choose one of document, char"),
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
    (["--model.schedule", "wavy"], "unknown --model.schedule 'wavy'; choose one of cosine, linear, constant"),
    (["--trainer.max_steps", "-5"], "needs a finite run: set --trainer.max_steps to a positive number, got -5"),
    (["--data.block_size", "55000"], "fewer than block_size + 1 = 55001; lower --data.block_size"),
    (["--data.block_size", "100000000"], "block_size 100000000 is longer than the whole corpus"),
    (["--data.source", "{inputs}/missing.txt"], "missing.txt' does not exist; accepted: 'python-stdlib', a local"),
    (["--data.source", "{inputs}/empty.txt"], "empty.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/separators.txt"], "separators.txt' has no documents; check the path"),
    (["--data.source", "{inputs}/one.txt", "--data.split_by", "document"],  # refused before the train cache
     "the val split of '{inputs}/one.txt' has no documents"),
    (["--data.source", "{inputs}/body.jsonl"], "has no text column 'text'; columns: ['body']. Pass --data.text_column"),
    (["--data.source", "{inputs}/broken.jsonl"], "broken.jsonl line 3 is not JSON"),
    (["--data.source", "{inputs}/body.parquet"], "has no text column 'text'; columns: ['body', 'id']"),
    (["--data.source", "{inputs}/not.parquet"], "not.parquet is not a readable parquet file"),
    (["--data.source", "roneneldan/TinyStories"], HUB_HINT),
    (["--config", "{inputs}/missing.yaml"], "missing.yaml"),
    (["--ckpt_path", "{inputs}/missing.ckpt"], "--ckpt_path {inputs}/missing.ckpt does not exist"),
    (["--ckpt_path", "{inputs}/text.ckpt"], "text.ckpt is damaged or unverifiable"),
    (["--ckpt_path", "{inputs}/truncated.ckpt"], "truncated.ckpt is damaged or unverifiable"),
    (["--ckpt_path", "{run}/checkpoints/last.ckpt", "--model.n_embd", "64"],
     "was trained with other settings (model.n_embd: 32 -> 64; trainer.max_steps: 2 -> 10)"),
    (["--ckpt_path", "{run}/checkpoints/last.ckpt", "--trainer.max_steps", "2", "--trainer.logger.version", "again"],
     "last.ckpt is at step 2, the end of its run (max_steps 2): nothing is left to train"),
    (["--ckpt_path", "{run}/checkpoints/last.ckpt", "--trainer.max_steps", "2"], "nothing is left to train"),
    # aimed at the finished run's own folder: refused before it is touched
    (["--trainer.logger.version", "version_0", "--model.lr", "-1"], "lr and eps must be positive"),
    (["--trainer.logger.version", "version_0"], "version_0 already holds a finished run; choose another"),
    # issue 23: each a traceback, a half-made run, or a refusal after Lightning's own lines
    (["--trainer.max_steps", "0"], "needs a finite run: set --trainer.max_steps to a positive number, got 0"),
    (["--model.mlp_hidden", "0"], "mlp_hidden must be a positive integer (or null: 4 × n_embd), got 0"),
    (["--model.mlp_hidden", "10000000000"], "parameters (n_layer=2, n_embd=32, mlp_hidden=10000000000) in float32 needs"),
    (["--model.mlp_hidden", "1e10"], 'Parser key "model.mlp_hidden"'),
    (["--model.init_std", "-1"], "init_std must be a positive finite number, got -1.0"),
    (["--seed_everything", "100000000000000000000"], "seed_everything must lie in 0..4294967295 (numpy's seed range)"),
    (["--seed_everything", "1e20"], 'Parser key "seed_everything"'),
    (["--data.val_windows", "0"], "val_windows must be >= 1, got 0"),
    (["--data.val_batch_size", "0"], "val_batch_size must be >= 1, got 0"),
    (["--trainer.val_check_interval", "0"], "val_check_interval must be positive (training steps, or a fraction"),
    (["--ckpt_path", ""], "--ckpt_path is empty; name a checkpoint file"),
    (["--ckpt_path", "{run}/checkpoints"], "checkpoints is a directory; name a checkpoint file in it, e.g."),
    (["--run_info", "[1,2]"], "--run_info is a JSON object, e.g. '{{\"seed\": 0}}', got [1,2]"),
    (["--config", "{inputs}/two_models.yaml"], "two_models.yaml repeats the key 'model' (lines"),
    # what a tired researcher types
    (["--model.dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--model.n_layer", "0"], "n_layer must be a positive integer, got 0"),
    (["--model.n_embd", "0"], "n_embd must be a positive integer, got 0"),
    (["--model.n_head", "0"], "n_head must be a positive integer, got 0"),
    (["--model.n_embd", "100000", "--model.n_head", "1"], "a model of about 2.4e+11 parameters"),
    (["--model.activation", ""], f"unknown --model.activation ''; {VALID_ACTIVATIONS}"),
    (["--model.norm", "LayerNorm"], "unknown --model.norm 'LayerNorm'"),
    (["--model.norm_eps", "0"], "norm_eps must be a positive finite number, got 0.0"),
    (["--model.tie_weights", "false", "--model.embedding_init_std", "-1"], "embedding_init_std must be a positive"),
    (["--model.matmul_precision", "low"], "unknown --model.matmul_precision 'low'; choose one of highest, high, medium"),
    (["--data.batch_size", "-1"], "batch_size must be >= 1, got -1"),
    (["--data.batch_size", "100000"], "100000 distinct windows of 33 tokens need"),
    (["--data.probe_windows", "0"], "probe_windows must be >= 1, got 0"),
    (["--data.val_fraction", "1.5"], "val_fraction must be in (0, 1), got 1.5"),
    (["--data.max_documents", "0"], "max_documents must be >= 1, got 0"),
    (["--data.tokenizer", "gtp2"], "unknown tokenizer 'gtp2'"),
    (["--trainer.precision", "17"], "unknown --trainer.precision '17'; choose one of 64, 32, 16, transformer-engine"),
    (["--trainer.accumulate_grad_batches", "0"], "accumulate_grad_batches must be >= 1, got 0"),
    (["--trainer.log_every_n_steps", "0"], "log_every_n_steps must be >= 1, got 0"),
    (["--trainer.val_check_interval", "-0.5"], "val_check_interval must be positive"),
    (["--trainer.gradient_clip_val", "-1"], "gradient_clip_val must be >= 0 (0 or null: no clipping), got -1"),
    (["--trainer.max_steps", "-1"], "needs a finite run: set --trainer.max_steps to a positive number, got -1"),
    (["--trainer.max_epochs", "0"], "max_epochs 0 ends the fit before its first step"),
    (["--trainer.devices", "0"], "devices must be >= 1 (or -1 / auto: every one, or a list of ids), got 0"),
    (["--seed_everything", "-1"], "seed_everything must lie in 0..4294967295 (numpy's seed range), got -1"),
    (["--threads", "-1"], "threads must be >= 1, got -1"),
    (["--global_batch_size", "12"], "global_batch_size 12 is not a whole multiple of data.batch_size × processes"),
]
# other commands on the same folder: {config}, {run} (the finished run's folder), {root} (config's folder)
COMMAND_CASES = [
    (["test", "--config", "{config}", "--ckpt_path", "{run}/checkpoints/last.ckpt"], "no test split: `actsweep test`"),
    (["validate", "--config", "{config}", "--data.val_windows", "0", "--ckpt_path", "{run}/checkpoints/last.ckpt"],
     "val_windows must be >= 1, got 0"),
    (["validate", "--config", "{config}", "--ckpt_path", "{run}"], "version_0 is a directory; name a checkpoint file"),
    (["report", "{root}/nowhere"], "nowhere does not exist; give a sweep's folder, e.g. lightning_logs/sweeps/"),
    (["report", "{root}"], "has no run folders (event files or status.json); give a sweep's folder"),
    (["report", "{config}"], "tiny.yaml is not a folder; give a sweep's folder"),
    (["report", "{root}", "--max-skipped-share", "2"], "--max-skipped-share is a share in [0, 1], got 2.0"),
    (["report", "{root}", "--bogus"], "unrecognized arguments: --bogus (see actsweep report --help)"),
    (["report"], "give a sweep folder, or --from-csv CSV with --sweep SWEEP (see actsweep report --help)"),
]
SWEEP_CASES = [
    ("unknown_key.yaml", [], "unknown key 'sweeps'; allowed keys: name, base, grid, seeds"),
    ("empty_grid.yaml", [], "'grid' is missing or empty"),
    ("seeds_int.yaml", [], "'seeds' is a non-empty list of integers, got 5"),
    ("syntax.yaml", [], "cannot read sweep file"),
    ("missing.yaml", [], "cannot read sweep file"),
    ("misspelt_key.yaml", [], "run activatoin=relu,seed=0 would not start: unrecognized arguments: --model.activatoin"),
    ("wrong_type.yaml", [], 'run n_layer=two,seed=0 would not start: Parser key "model.n_layer"'),
    ("unknown_key.yaml", ["--jobs", "0"], "--jobs must be at least 1"),
    ("unknown_key.yaml", ["--bogus"], "unrecognized arguments: --bogus"),
    ("repeated.yaml", [], "repeated.yaml repeats the key 'grid' (lines 3 and 5); keep one"),
    ("repeated_base.yaml", [], "two_models.yaml repeats the key 'model' (lines"),
    ("labels_list.yaml", [], "'labels' is a mapping {label: {dotted.key: value}}, got ['relu', 'gelu']"),
    ("fixed_list.yaml", [], "'fixed' is a mapping {dotted.key: value}, got ['trainer.max_steps', 5]"),
    ("base_number.yaml", [], "'base' 42 is not a file"),
    ("seeds_negative.yaml", [], "run lr=1e-3,seed=-1 would not start: seed_everything must lie in 0..4294967295"),
    ("seeds_huge.yaml", [], "run lr=1e-3,seed=1099511627776 would not start: seed_everything must lie in"),
    ("seeds_text.yaml", [], "'seeds' is a non-empty list of integers, got ['0', '1']"),
    ("heads.yaml", [], "run n_head=3,seed=0 would not start: n_embd (32) must be divisible by n_head (3)"),
    ("steps.yaml", [], "run max_steps=-5,seed=0 would not start: the learning-rate schedule needs a finite run"),
    ("empty_values.yaml", [], "'grid' maps dotted keys to non-empty lists of values, got {'model.lr': []}"),
    ("lr_negative.yaml", [], "run lr=-1e-3,seed=0 would not start: lr and eps must be positive"),
    ("huge_mlp.yaml", [], "run mlp_hidden=10000000000,seed=0 would not start: a model of about 1.28e+12 parameters"),
    ("fixed_val_windows.yaml", [], "run lr=1e-3,seed=0 would not start: val_windows must be >= 1, got 0"),
    ("comparison_key.yaml", [], "comparison key 'model.activation' is not a grid key; grid keys: model.lr"),
    ("comparison_value.yaml", [], "comparison of model.lr names 0.01, not among its grid values [0.001]"),
    ("choice.yaml", [], "run norm=batchnorm,seed=0 would not start: unknown --model.norm 'batchnorm'; choose one of"),
    ("unknown_key.yaml", ["--jobs", "-1"], "--jobs must be at least 1, got -1"),
    ("unknown_key.yaml", ["--jobs", "two"], "argument --jobs: invalid int value: 'two' (see actsweep sweep --help)"),
]


CHOICES = [  # (registry, the Literal type of its switch)
    (ACTIVATIONS, ActivationName), (SLOPE_SCOPES, SlopeScope), (NORMS, NormName), (QK_NORMS, QKNormName),
    (BIAS_SITES, BiasSites), (DROPOUT_SITES, DropoutSites), (INITS, InitName), (ATTENTION, AttentionName),
    (THRESHOLD_SCOPES, ThresholdScope), (ENTROPY_MAXIMA, EntropyMax), (ENTROPY_REDUCTIONS, EntropyReduction),
    (DECAY_SCOPES, DecayScope), (ADAMW_KERNELS, AdamWKernel), (OPTIMIZERS, OptimizerName), (DECAYS, ScheduleName),
    (MATMUL_PRECISIONS, MatmulPrecision), (WINDOWS, WindowKind), (SAMPLINGS, Sampling), (VAL_SAMPLINGS, ValSampling),
]


@pytest.mark.parametrize("registry, choice", CHOICES)
def test_a_switch_type_names_its_registry_exactly(registry, choice):
    assert get_args(choice) == tuple(registry)


def test_fit_help_lists_the_choices_of_each_switch(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert exit_.value.code == 0
    for flag, names in (("--model.norm", NORMS), ("--model.sdpa_backend", ATTENTION), ("--model.schedule", DECAYS),
                        ("--data.sampling", SAMPLINGS), ("--data.split_by", ("document", "char"))):
        assert f"  {flag} {{{','.join(names)}}}" in lines
    # a name or a list of names: the choices stand in the type
    (at,) = [i for i, line in enumerate(lines) if line.startswith("  --model.activation ")]
    assert all(f"'{name}'" in " ".join(lines[at:at + 12]) for name in ACTIVATIONS)


def test_the_table_holds_a_hundred_bad_inputs():
    assert len(FIT_CASES) + len(COMMAND_CASES) + len(SWEEP_CASES) >= 100


@pytest.mark.parametrize("args, phrase", FIT_CASES)
def test_bad_fit_input_is_one_line_and_changes_nothing(earlier, capsys, args, phrase):
    inputs, config, before = earlier
    run = config.parent / "logs" / "tiny" / "version_0"
    line = fit_error(["fit", "--config", str(config), *(a.format(inputs=inputs, run=run) for a in args)], capsys)
    assert phrase.format(inputs=inputs) in line
    assert snapshot(config.parent) == before


@pytest.mark.parametrize("args, phrase", COMMAND_CASES)
def test_bad_command_is_one_line_and_changes_nothing(earlier, capsys, args, phrase):
    inputs, config, before = earlier
    places = {"config": config, "run": config.parent / "logs" / "tiny" / "version_0", "root": config.parent}
    assert phrase in fit_error([a.format(**places) for a in args], capsys)
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
