"""Two CPU processes under Lightning's DDP (gloo, `ddp_spawn`) equal one process: disjoint halves of
the same global batch, the same validation loss, and checkpoints that resume exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from actsweep.study.logs import read_scalars

from helpers import Recorder, tiny_modules, tiny_trainer, write_config

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY, PER_RANK = 6, 3, 4  # 2 ranks x 4 windows = the single-process batch of 8


def ddp_fit(folder: Path, out: Path, ckpt_path: Path | None = None) -> dict[int, dict]:
    """Fit the tiny model on 2 spawned processes; what each rank's `Recorder` saw, by rank."""
    L.seed_everything(7)
    module, data = tiny_modules(folder, batch_size=PER_RANK)
    out.mkdir()
    checkpoints = ModelCheckpoint(dirpath=folder / "ckpt", save_top_k=-1, every_n_train_steps=SAVE_EVERY,
                                  filename="{step}")
    trainer = tiny_trainer(folder, [Recorder(out), checkpoints], strategy="ddp_spawn", devices=2,
                           max_steps=STEPS, limit_val_batches=None, val_check_interval=SAVE_EVERY,
                           logger=TensorBoardLogger(out, name="tb", version=0))
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return {rank: torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict]]:
    folder = tmp_path_factory.mktemp("ddp")
    return folder, ddp_fit(folder, folder / "full")


def test_ranks_draw_disjoint_halves_of_the_single_process_batch(ddp_run):
    folder, ranks = ddp_run
    _, single = tiny_modules(folder)  # batch_size 8, one process
    for step in range(STEPS):
        rows = [ranks[rank]["inputs"][step] for rank in (0, 1)]
        assert all(len(r) == PER_RANK for r in rows)
        assert not {tuple(r.tolist()) for r in rows[0]} & {tuple(r.tolist()) for r in rows[1]}
        interleaved = torch.stack(rows, dim=1).flatten(0, 1)  # rank r holds rows r::2
        assert torch.equal(interleaved, single.train_batch(step)[0])


def test_logged_train_loss_is_the_mean_over_ranks(ddp_run):
    folder, ranks = ddp_run
    logged = read_scalars(folder / "full" / "tb" / "version_0")["train/loss"]
    assert list(logged.index) == list(range(STEPS))
    for step, value in logged.items():
        per_rank = [ranks[rank]["losses"][step].item() for rank in (0, 1)]
        assert per_rank[0] != pytest.approx(per_rank[1])  # the ranks' losses differ: the test can tell
        assert value == pytest.approx(sum(per_rank) / 2, rel=1e-6)


def test_validation_loss_equals_single_process_on_the_same_weights(ddp_run):
    folder, ranks = ddp_run
    ddp_val = ranks[0]["val_losses"][SAVE_EVERY]
    assert torch.equal(ddp_val, ranks[1]["val_losses"][SAVE_EVERY])
    module, data = tiny_modules(folder)
    (metrics,) = tiny_trainer(folder, [], limit_val_batches=None).validate(
        module, data, ckpt_path=folder / "ckpt" / f"step={SAVE_EVERY}.ckpt", verbose=False)
    assert metrics["val/loss"] == pytest.approx(ddp_val.item(), abs=1e-6)


def test_ddp_checkpoint_resumes_exactly(ddp_run):
    folder, ranks = ddp_run
    resumed = ddp_fit(folder, folder / "resumed", ckpt_path=folder / "ckpt" / f"step={SAVE_EVERY}.ckpt")
    for rank in (0, 1):
        assert list(resumed[rank]["losses"]) == list(range(SAVE_EVERY, STEPS))
        assert all(torch.equal(loss, ranks[rank]["losses"][step]) for step, loss in resumed[rank]["losses"].items())


def test_cli_fit_under_ddp_launcher(tmp_path):
    """`actsweep fit --trainer.strategy ddp`: Lightning relaunches the command once per process."""
    config = write_config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "actsweep.cli", "fit", "--config", str(config),
                             "--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", str(PER_RANK),
                             "--trainer.max_steps", "4"], capture_output=True, text=True, timeout=300)
    (run,) = (tmp_path / "logs" / "tiny").iterdir()
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
