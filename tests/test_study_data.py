"""The data side of the two studies: Hugging Face tokenizers (offline, with a tokenizer trained here),
one-epoch sampling, validation over every window, and the CodeParrot validation split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actsweep.data import hub, sources, windows
from actsweep.data.hub import DataSourceError
from actsweep.data.module import TextDataModule
from actsweep.data.tokenizers import ENDOFTEXT, get_tokenizer, train_bpe_tokenizer
from helpers import fit_error, write_config, write_corpus

DOCS = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * (1 + i % 5) for i in range(200)]


@pytest.fixture
def tokenizer_file(tmp_path):
    return train_bpe_tokenizer(DOCS, tmp_path / "tok" / "tokenizer.json", vocab_size=300)


def test_hf_tokenizer_from_a_local_file_round_trips_and_ends_documents(tokenizer_file, no_network):
    tok = get_tokenizer(f"hf:{tokenizer_file}")
    from tokenizers import Tokenizer

    independent = Tokenizer.from_file(str(tokenizer_file))
    assert tok.n_vocab == independent.get_vocab_size() == 300
    assert tok.eot == independent.token_to_id(ENDOFTEXT)
    ids = tok.encode_batch(DOCS[:3])
    for doc, row in zip(DOCS, ids):
        assert row[-1] == tok.eot and tok.eot not in row[:-1]
        assert row[:-1] == independent.encode(doc).ids and tok.decode(row[:-1]) == doc
    assert get_tokenizer(**tok.to_meta()) is tok  # restored from the cache metadata: loaded once


def test_hf_tokenizer_trains_document_windows(tmp_path, tokenizer_file, no_network):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    data = TextDataModule(source=str(corpus), tokenizer=f"hf:{tokenizer_file}", block_size=16, batch_size=4,
                          windows="document", val_windows=None, cache_dir=str(tmp_path / "cache"))
    data.prepare_data()
    data.setup()
    assert data.vocab_size == 300
    x, y = data.train_batch(0)
    assert x.shape == (4, 16) and int(x.max()) < 300 and (x[:, 1:] == y[:, :-1]).all()
    # Every validation chunk, when asked: all whole-document chunks of the val split.
    assert len(data.val_starts()) == len(data._chunk_starts("val"))


def test_a_different_tokenizer_file_is_a_different_token_cache(tmp_path, tokenizer_file):
    other = train_bpe_tokenizer(DOCS, tmp_path / "other" / "tokenizer.json", vocab_size=280)
    corpus = str(write_corpus(tmp_path))
    names = {TextDataModule(source=corpus, tokenizer=f"hf:{path}")._cache_name("train") for path in (tokenizer_file, other)}
    assert len(names) == 2 and all("/" not in name for name in names)


def test_an_uncached_hub_tokenizer_offline_fails_at_once_saying_how_to_provide_it(tmp_path, capsys, no_network):
    with pytest.raises(DataSourceError, match="huggingface-cli download nobody/no-such-tokenizer tokenizer.json"):
        get_tokenizer("hf:nobody/no-such-tokenizer")
    config = write_config(tmp_path, data={"tokenizer": "hf:nobody/no-such-tokenizer"})
    error = fit_error(["fit", "--config", str(config)], capsys)
    assert "--data.tokenizer hf:path/to/tokenizer.json" in error


def test_epoch_sampling_visits_every_window_once_per_epoch_and_shards_exactly():
    n, batch, world = 103, 4, 2
    per_epoch = n // (batch * world)  # 12 global batches; 7 windows left out of each epoch
    seen = np.concatenate([windows.epoch_rows(5, step, n, batch * world) for step in range(per_epoch)])
    assert len(seen) == len(set(seen.tolist())) == per_epoch * batch * world
    # Ranks' shards are the single-process global batch, split; a step's batch needs no earlier step.
    for step in (0, 7, per_epoch + 3):
        shards = [windows.epoch_rows(5, step, n, batch, rank, world) for rank in range(world)]
        whole = windows.epoch_rows(5, step, n, batch * world)
        assert sorted(np.concatenate(shards).tolist()) == sorted(whole.tolist())
        assert (shards[1] == whole[1::2]).all()
    # The next epoch is a new permutation of the same windows; another seed another order.
    second = np.concatenate([windows.epoch_rows(5, per_epoch + s, n, batch * world) for s in range(per_epoch)])
    assert len(set(second.tolist())) == len(second) and not (second == seen).all()
    assert not (windows.epoch_rows(6, 0, n, 8) == windows.epoch_rows(5, 0, n, 8)).all()


def test_epoch_sampling_in_both_window_modes(tmp_path):
    data = TextDataModule(source=str(write_corpus(tmp_path)), tokenizer="char", block_size=15, batch_size=8,
                          sampling="epoch", split_by="char", val_windows=None, cache_dir=str(tmp_path / "c"))
    data.setup()
    n = len(data._tokens("train")) // 16
    starts = np.concatenate([windows.random_window_starts(1337, s, len(data._tokens("train")), 15, 8, sampling="epoch")
                             for s in range(n // 8)])
    # One epoch: distinct windows on the non-overlapping grid, all but the n mod 8 left out.
    assert len(set(starts.tolist())) == len(starts) == n - n % 8
    assert set(starts.tolist()) <= set(range(0, n * 16, 16))
    x, y = data.train_batch(3)
    tokens = np.asarray(data._tokens("train"))
    rows = np.stack([tokens[start:start + 16] for start in starts[3 * 8:4 * 8]])  # step 3's windows, cut by hand
    assert (x.numpy() == rows[:, :-1]).all() and (y.numpy() == rows[:, 1:]).all()
    assert len(data.val_starts()) == len(data._tokens("val")) // 16  # every val window


def test_codeparrot_validation_documents_come_from_its_validation_split(monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "read_hub", lambda name, split, column: calls.append((name, split)) or [f"{name} {split}"] * 3)
    for options in ({}, {"val_source": "huggingface-course/codeparrot-ds-valid"}):
        calls.clear()
        sources.Corpus(source="huggingface-course/codeparrot-ds-train", text_column="content", **options).load_splits()
        assert calls == [("huggingface-course/codeparrot-ds-train", "train"),
                         ("huggingface-course/codeparrot-ds-valid", "validation")]
    assert hub.documents_split("roneneldan/TinyStories") == "train"


def released_chunks(documents: list[list[int]], context: int) -> list[list[int]]:
    """run_clm.py:59-75 (the HF course's `tokenize`): each document's overflowing chunks of `context`
    tokens, only the full ones kept."""
    return [ids[i:i + context] for ids in documents for i in range(0, len(ids), context) if len(ids[i:i + context]) == context]


def test_block_size_127_document_windows_are_the_released_128_token_chunks_and_loss():
    """revival.yaml's block_size 127: our (127 + 1)-token document windows are the released 128-token
    chunks, and the loss on them (127 predictions, labels shifted inside the chunk as HF GPT-2 does)
    is the released loss: causal attention makes the chunk's last input position irrelevant."""
    import torch
    import torch.nn.functional as F

    from actsweep.model.gpt import GPT, GPTConfig

    rng = np.random.default_rng(0)
    eot = 99
    documents = [rng.integers(0, 99, size=n).tolist() for n in (300, 127, 128, 129, 50, 400)]
    stream = np.array([t for ids in documents for t in (*ids, eot)])
    starts = windows.document_chunk_starts(stream, eot, 127 + 1)
    ours = [stream[s:s + 128].tolist() for s in starts]
    assert ours == released_chunks(documents, 128) and len(ours) == 2 + 0 + 1 + 1 + 0 + 3

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, block_size=128, n_layer=2, n_head=2, n_embd=32, sdpa_backend="math")).eval()
    chunks = torch.tensor(ours)
    hf_logits = model(chunks)[:, :-1]  # GPT2LMHeadModel(labels=input_ids): shift inside the chunk
    hf_loss = F.cross_entropy(hf_logits.reshape(-1, 100), chunks[:, 1:].reshape(-1))
    x, y = chunks[:, :127], chunks[:, 1:]  # ours: a 127-token input and its 127 targets
    our_loss = F.cross_entropy(model(x).reshape(-1, 100), y.reshape(-1))
    assert our_loss.item() == pytest.approx(hf_loss.item(), rel=1e-6)
