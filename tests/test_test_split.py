"""`actsweep test` evaluates a real test split: windows disjoint from training and validation, held
out of the corpus (`--data.test_fraction`) or read from `--data.test_source`."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from actsweep.data.sources import Corpus
from helpers import DATA, MODEL, finished_fit, fit_error, tiny_trainer, write_config, write_corpus
from actsweep.data.module import TextDataModule
from actsweep.train.module import ActSweepModule


def write_jsonl(folder, n: int = 40):
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " * 5}) + "\n" for i in range(n)))
    return path


def test_held_out_documents_are_disjoint_and_training_shrinks_only_when_asked(tmp_path):
    source = str(write_jsonl(tmp_path))
    plain, held = Corpus(source=source).load_splits(), Corpus(source=source, test_fraction=0.25).load_splits()
    assert plain["test"] == [] and held["val"] == plain["val"]
    assert held["train"] + held["test"] == plain["train"] and len(held["test"]) == 9  # 25% of 36
    assert not set(held["test"]) & (set(held["train"]) | set(held["val"]))
    # a corpus without a test split keeps its identity, so its token caches stay valid
    assert "test_" not in Corpus(source=source).describe().split(" ", 1)[1]
    assert Corpus(source=source, test_fraction=0.25).describe() != Corpus(source=source).describe()


def test_char_split_cuts_train_test_val_in_order(tmp_path):
    text = write_corpus(tmp_path).read_text()
    splits = Corpus(source=str(tmp_path / "corpus.txt"), split_by="char", separator="\0",
                    test_fraction=0.1).load_splits()
    parts = ["".join(splits[k]) for k in ("train", "test", "val")]
    assert "".join(parts) == text.strip()
    assert len(parts[1]) == pytest.approx(0.1 * len(text), abs=2) and len(parts[2]) == pytest.approx(0.1 * len(text), abs=2)


def data_module(folder, **options) -> TextDataModule:
    data = TextDataModule(**{**DATA, "source": str(write_corpus(folder)), "cache_dir": str(folder / "cache"),
                             "seed": 7, **options})
    data.prepare_data()
    return data


def test_test_loss_is_the_loss_over_the_test_windows(tmp_path):
    L.seed_everything(7)
    data = data_module(tmp_path, test_fraction=0.1)
    module = ActSweepModule(**{**MODEL, "dropout": 0.0}, vocab_size=data.vocab_size, block_size=DATA["block_size"])
    trainer = tiny_trainer(tmp_path, [], max_steps=2, limit_val_batches=None)
    trainer.fit(module, data)
    (test,) = trainer.test(module, data, verbose=False)
    (val,) = trainer.validate(module, data, verbose=False)
    module.eval()
    with torch.no_grad():  # independently: every test window's tokens, straight from the test stream
        losses = torch.cat([module.loss(b, reduction="none").double() for b in data.val_batches(split="test")])
    assert test["test/loss"] == pytest.approx(losses.mean().item(), rel=1e-6)
    assert test["test/loss"] != pytest.approx(val["val/loss"], rel=1e-4)
    assert test["test/nonfinite_batches"] == 0
    # the test stream is text no training or validation window reads
    tokens = {k: data._tokens(k).tobytes() for k in ("train", "val", "test")}
    assert tokens["test"][:64] not in tokens["train"] and tokens["test"][:64] not in tokens["val"]


def test_test_without_a_test_split_is_refused(tmp_path, capsys):
    config = write_config(tmp_path)
    error = fit_error(["test", "--config", str(config)], capsys)
    assert "no test split" in error and "--data.test_fraction" in error


def test_test_refuses_a_checkpoint_trained_on_the_test_windows(tmp_path):
    data = data_module(tmp_path)  # trained without a test split
    module = ActSweepModule(**MODEL, vocab_size=data.vocab_size, block_size=DATA["block_size"])
    trainer = tiny_trainer(tmp_path, [], max_steps=1)
    trainer.fit(module, data)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    with pytest.raises(Exception, match="trained on a different split"):
        trainer.test(module, data_module(tmp_path, test_fraction=0.1), ckpt_path=tmp_path / "run.ckpt", verbose=False)


def test_the_cli_refuses_such_a_test_in_one_line_before_restoring_or_tokenizing(tmp_path, capsys):
    """`actsweep test --data.test_fraction …` on a run trained without one: refused from the
    checkpoint's recorded training corpus, before Lightning restores it or a test cache is built."""
    config = finished_fit(tmp_path)
    checkpoint = next((tmp_path / "logs").rglob("last.ckpt"))
    before = sorted(p.name for p in (tmp_path / "cache").iterdir())
    error = fit_error(["test", "--config", str(config), "--data.test_fraction", "0.1", "--ckpt_path", str(checkpoint)],
                      capsys)
    assert "trained on a different split" in error
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == before
