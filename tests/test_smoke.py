"""`actsweep sweep --smoke`: what it changes in each study's config, where it writes, and that a failing
run fails the smoke loudly. (The three studies' smokes themselves run in .ci/run.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from actsweep.study import runner
from actsweep.study.plan import fit_command
from actsweep.study.smoke import MARKER, prepare_root, smoke_changes, smoke_sweep
from actsweep.study.sweep import SweepError, load_sweep
from helpers import write_sweep, write_tiny_base


def config(name: str) -> dict:
    return yaml.safe_load(Path(f"configs/{name}.yaml").read_text())


def test_revival_smoke_keeps_the_training_setup_and_replaces_hub_inputs(tmp_path):
    changes, notes = smoke_changes(config("revival"), tmp_path, cuda=False)
    assert changes["data.source"] == str(tmp_path / "corpus" / "corpus.jsonl")
    assert changes["data.val_source"] is None and changes["data.max_documents"] is None
    assert changes["data.text_column"] == "text"
    assert changes["data.tokenizer"] == f"hf:{tmp_path / 'corpus' / 'tokenizer.json'}"  # not cached here
    assert changes["trainer.max_steps"] == 2 and changes["trainer.val_check_interval"] == 4  # accumulation 4
    assert changes["trainer.precision"] == "bf16-mixed"  # no CUDA: fp16 matmuls are emulated on CPUs
    assert changes["data.batch_size"] == 2 and changes["data.val_windows"] == 4
    # What defines the runs stays: model, optimizer, clipping, accumulation, schedule, windows, sampling.
    assert not {k for k in changes if k.startswith("model.")}
    assert not {"trainer.gradient_clip_val", "trainer.accumulate_grad_batches", "data.windows", "data.sampling",
                "data.block_size", "trainer.callbacks"} & set(changes)
    assert len(notes) == len(changes)
    on_gpu, _ = smoke_changes(config("revival"), tmp_path, cuda=True)
    assert "trainer.precision" not in on_gpu  # the real 16-mixed on a GPU


def test_blog_code_smoke_keeps_its_char_tokenizer(tmp_path):
    changes, _ = smoke_changes(config("blog_code"), tmp_path, cuda=False)
    assert "data.tokenizer" not in changes and "trainer.precision" not in changes
    assert changes["data.source"].endswith("corpus.jsonl")


def test_smoke_forces_its_steps_over_the_grid_and_keeps_one_seed(tmp_path):
    sweep, notes = smoke_sweep(load_sweep("configs/sweeps/blog_code.yaml"), tmp_path, cuda=False)
    assert sweep.seeds == [1337] and any(n.startswith("seeds:") for n in notes)
    long_run = [r for r in sweep.runs() if r.overrides.get("trainer.max_steps") == 10000][0]
    command = fit_command(sweep, long_run, tmp_path)
    assert command[command.index("--trainer.max_steps") + 1] == "2" and "10000" not in command
    assert (tmp_path / "corpus" / "corpus.jsonl").stat().st_size > 100_000


def test_smoke_never_replaces_a_folder_of_real_runs(tmp_path):
    (tmp_path / "blog" / "lr=1e-3,seed=0").mkdir(parents=True)
    with pytest.raises(SweepError, match="holds no smoke run"):
        prepare_root(tmp_path, "blog")
    assert (tmp_path / "blog" / "lr=1e-3,seed=0").is_dir()
    prepare_root(tmp_path, "fresh")
    (tmp_path / "fresh" / "old").mkdir()
    prepare_root(tmp_path, "fresh")  # a smoke folder is replaced by the next smoke
    assert (tmp_path / "fresh" / MARKER).is_file() and not (tmp_path / "fresh" / "old").exists()


def test_a_failing_smoke_run_fails_the_command_with_its_log(tmp_path, capsys):
    base = write_tiny_base(tmp_path)
    # a context longer than the corpus: only the data refutes it, so the run starts and fails
    sweep_file = write_sweep(tmp_path / "s.yaml", base, [{"data.block_size": [1000000]}], [0])
    code = runner.main([str(sweep_file), "--smoke", "--root", str(tmp_path / "smoke"), "--no-report"])
    captured = capsys.readouterr()
    assert code == 1
    failed = captured.err.split("SMOKE FAILED")[1]
    assert "SMOKE FAILED: block_size=1000000,seed=0" in captured.err and "longer than the whole corpus" in failed


@pytest.mark.parametrize("study", sorted(p.stem for p in Path("configs/sweeps").glob("*.yaml")))
def test_every_shipped_sweep_passes_its_own_checks_unsmoked(tmp_path, capsys, study):
    """The dry run checks each run's settings as `actsweep fit` will. The smoke's overrides (2 steps)
    once hid that the revival config's `max_steps: -1`, which its EpochBudget sets, was refused."""
    assert runner.main([f"configs/sweeps/{study}.yaml", "--root", str(tmp_path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("actsweep fit --config") >= 7 and not any(tmp_path.iterdir())
