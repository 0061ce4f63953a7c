"""Data pipeline: offline tokenizers, sources, the verified token cache and deterministic windows.

Never touches the network: hub paths run with HF_HUB_OFFLINE=1 and a patched probe.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from actsweep.data import cache, hub, module as data, sources
from actsweep.data.module import TextDataModule
from actsweep.errors import ConfigError
from actsweep.data.tokenizers import (
    ENCODER_JSON_SHA256,
    VOCAB_BPE_SHA256,
    CharTokenizer,
    get_tokenizer,
    gpt2_encoding,
    gpt2_files,
)
from references import expected_offsets, reference_chunk_starts

TINYSTORIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories"
RAW_TXT = TINYSTORIES / "TinyStories-train.head2MiB.raw.txt"
STORIES_JSONL = TINYSTORIES / "TinyStories-train.head.stories.jsonl"
REAL_HUB_PROBE = hub.hub_reachable
needs_tinystories = pytest.mark.skipif(not RAW_TXT.exists(), reason="shared TinyStories sample absent")
TEXT = "Hello world!  It's 3.14 — “quotes” 日本語\n\n  def f(x):\n\treturn x   \n"


@pytest.fixture(autouse=True)
def hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the hub (conftest also sets the offline variables)."""
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)


@pytest.fixture()
def jsonl_corpus(tmp_path: Path) -> Path:
    """200 documents of random words: ~45k characters, deterministic."""
    rng = np.random.default_rng(0)
    words = np.array(["the", "cat", "sat", "on", "a", "mat", "and", "ran", "far", "away", "Zoë"])
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(200):
            f.write(json.dumps({"body": " ".join(rng.choice(words, size=40))}) + "\n")
    return path


def char_module(corpus: Path, tmp_path: Path, **kwargs) -> TextDataModule:
    options = dict(tokenizer="char", text_column="body", block_size=16, batch_size=4, cache_dir=str(tmp_path / "c"))
    return TextDataModule(source=str(corpus), **{**options, **kwargs})


# -- tokenizers --------------------------------------------------------------------------------


def test_gpt2_offline_matches_independent_bpe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # no earlier cached copy can help
    gpt2_encoding.cache_clear()
    tok = get_tokenizer("gpt2")
    assert (tok.n_vocab, tok.eot) == (50257, 50256)

    vocab_bpe, encoder_json = gpt2_files()
    assert hashlib.sha256(Path(vocab_bpe).read_bytes()).hexdigest() == VOCAB_BPE_SHA256
    assert hashlib.sha256(Path(encoder_json).read_bytes()).hexdigest() == ENCODER_JSON_SHA256
    merges = [tuple(line.split()) for line in Path(vocab_bpe).read_text("utf-8").split("\n")[1:] if line]
    reference = transformers.GPT2Tokenizer(vocab=json.loads(Path(encoder_json).read_text("utf-8")), merges=merges)
    code = Path(sources.stdlib_files()[0]).read_text("utf-8")[:5000]
    for text in (TEXT, code):
        assert tok.encode_batch([text]) == [reference.encode(text) + [50256]]
    assert tok.decode(tok.encode_batch([TEXT])[0][:-1]) == TEXT


def test_char_tokenizer_vocabulary_and_meta_round_trip() -> None:
    tok = CharTokenizer.from_texts(["hello", "wörld"])
    assert tok.chars == "".join(sorted(set("hello" + "wörld" + "\n")))
    assert tok.eot is None
    ids = tok.encode_batch(["hello", "wörld"])
    assert ids[0] == [tok.chars.index(c) for c in "hello\n"]
    assert tok.decode(ids[1]) == "wörld\n"
    restored = get_tokenizer(**tok.to_meta())
    assert restored.chars == tok.chars
    with pytest.raises(ValueError, match="not in the char vocabulary"):
        tok.encode_batch(["xyz"])


def test_unknown_tokenizer_lists_valid_names(jsonl_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="char, gpt2"):
        get_tokenizer("bpe")
    with pytest.raises(ValueError, match="valid names"):
        char_module(jsonl_corpus, tmp_path, tokenizer="sentencepiece")


# -- cache ---------------------------------------------------------------------------------------

DOCS = [f"document {i}: " + "lorem ipsum " * (i % 7) for i in range(50)]


def build_small(cache_dir: Path, fingerprint: str = "fp") -> cache.TokenArray:
    return cache.load_or_build("small", fingerprint, lambda: DOCS, lambda: get_tokenizer("gpt2"),
                               meta={"source": "test docs", "split": "train"}, cache_dir=cache_dir)


def direct_tokens() -> np.ndarray:
    return np.concatenate([np.array(ids) for ids in get_tokenizer("gpt2").encode_batch(DOCS)])


def must_not_run():
    raise AssertionError("a valid cache was rebuilt")


def test_cache_round_trip_and_reuse(tmp_path: Path) -> None:
    built = build_small(tmp_path)
    assert built.tokens.dtype == np.uint16 and built.meta["count"] == len(direct_tokens())
    np.testing.assert_array_equal(built.tokens, direct_tokens())
    loaded = cache.load_or_build("small", "fp", must_not_run, must_not_run, cache_dir=tmp_path)
    np.testing.assert_array_equal(loaded.tokens, direct_tokens())
    assert not loaded.tokens.flags.writeable
    assert loaded.meta["tokenizer"] == {"name": "gpt2"}
    assert loaded.meta["sha256"] == hashlib.sha256(loaded.path.read_bytes()).hexdigest()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_byte])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path: Path, damage) -> None:
    original = np.array(build_small(tmp_path).tokens)
    damage(tmp_path / "small.bin")
    with pytest.warns(UserWarning, match="damaged.*rebuilding"):
        rebuilt = build_small(tmp_path)
    np.testing.assert_array_equal(rebuilt.tokens, original)


def test_big_untouched_cache_loads_on_samples_but_a_copy_is_hashed(tmp_path: Path, monkeypatch) -> None:
    build_small(tmp_path)
    monkeypatch.setattr(cache, "FULL_HASH_BYTES", 0)  # as if it were a multi-GB cache
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert cache.load("small", "fp", tmp_path) is not None and hashed == []
    copy = (tmp_path / "small.bin").read_bytes()
    time.sleep(0.01)
    (tmp_path / "small.bin").write_bytes(copy)  # same bytes, new mtime: verified by content, still valid
    assert cache.load("small", "fp", tmp_path) is not None and len(hashed) == 1


def test_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    build_small(tmp_path, fingerprint="old")
    with pytest.warns(UserWarning, match="stale"):
        assert cache.load("small", "new", tmp_path) is None


def test_interrupted_build_is_never_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_small(tmp_path)  # an older valid cache: an interrupted rebuild must not leave it vouching
    tok = get_tokenizer("gpt2")
    calls = []

    def failing_encode(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return get_tokenizer("gpt2").encode_batch(texts)

    monkeypatch.setattr(cache, "CHUNK_DOCS", 10)
    monkeypatch.setattr(tok, "encode_batch", failing_encode, raising=False)
    with pytest.raises(KeyboardInterrupt):
        cache.build("small", DOCS, tok, {"fingerprint": "fp"}, tmp_path)
    assert cache.load("small", "fp", tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.bin"]  # no metadata, no temp files
    monkeypatch.undo()
    np.testing.assert_array_equal(build_small(tmp_path).tokens, direct_tokens())


def test_empty_corpus_and_unwritable_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="produced no tokens"):
        cache.build("empty", [], get_tokenizer("gpt2"), {"source": "nothing"}, tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(cache.CacheDirError, match="ACTSWEEP_CACHE_DIR"):
        cache.build("x", DOCS, get_tokenizer("gpt2"), {}, blocker / "sub")


# -- sources -------------------------------------------------------------------------------------


@needs_tinystories
def test_tinystories_txt_and_jsonl_layouts_agree(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="truncated document"):
        txt_docs = sources.read_documents(str(RAW_TXT))
    jsonl_docs = sources.read_documents(str(STORIES_JSONL))
    assert len(txt_docs) == len(jsonl_docs) == 2316
    assert txt_docs == [d.strip() for d in jsonl_docs]
    tail = RAW_TXT.read_text("utf-8").rsplit("<|endoftext|>", 1)[1].strip()
    assert tail and not any(tail in d for d in txt_docs[-3:])  # the cut-off story is dropped

    modules = [TextDataModule(source=str(p), block_size=64, cache_dir=str(tmp_path)) for p in (RAW_TXT, STORIES_JSONL)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncated-story warning, checked above
        for dm in modules:
            dm.setup("fit")
    for split in ("train", "val"):
        np.testing.assert_array_equal(modules[0]._tokens(split), modules[1]._tokens(split))
    assert 400_000 < len(modules[0]._tokens("train")) + len(modules[0]._tokens("val")) < 600_000


def test_parquet_with_mojibake_is_repaired(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    clean = ["She said “hi” and it’s fine.", "No quotes here, naïve café.", "“Done”"]
    broken = ["".join(_cp1252_char(b) for b in s.encode("utf-8")) if "“" in s else s for s in clean]
    assert "â€œ" in broken[0] and broken[1] == clean[1]  # clean text is left alone
    pq.write_table(pa.table({"text": broken}), tmp_path / "part.parquet")
    assert sources.read_documents(str(tmp_path / "part.parquet")) == clean


def _cp1252_char(byte: int) -> str:
    """How a cp1252 reader shows one byte of UTF-8 (undefined bytes pass through as latin-1)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return bytes([byte]).decode("latin-1")


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good story<|endoftext|>bad \xff\xfe byte<|endoftext|>")
    with pytest.warns(UserWarning, match=r"2 undecodable"):
        docs = sources.read_documents(str(path))
    assert docs == ["good story", "bad \ufffd\ufffd byte"]


def test_directory_source_reads_all_files(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("two<|endoftext|>")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n")
    (tmp_path / "notes.md").write_text("ignored")
    assert sources.read_documents(str(tmp_path)) == ["one", "two"]
    assert sources.read_documents(str(tmp_path / "*.txt")) == ["two"]


def test_python_stdlib_source_has_no_tests() -> None:
    files = sources.stdlib_files()
    assert len(files) > 500 and files == sorted(files)
    excluded = {"test", "tests", "idle_test", "__pycache__", "site-packages"}
    assert not [f for f in files if excluded & set(f.parts)]
    assert any(f.name == "json" or f.parent.name == "json" for f in files)


def test_document_and_char_splits(jsonl_corpus: Path) -> None:
    docs = sources.read_documents(str(jsonl_corpus), text_column="body")
    by_doc = sources.Corpus(str(jsonl_corpus), text_column="body").load_splits()
    assert (len(by_doc["train"]), len(by_doc["val"])) == (180, 20)
    assert sorted(by_doc["train"] + by_doc["val"]) == sorted(docs)
    by_char = sources.Corpus(str(jsonl_corpus), text_column="body", split_by="char").load_splits()
    assert "".join(by_char["train"] + by_char["val"]) == "".join(docs)
    assert len("".join(by_char["train"])) == int(len("".join(docs)) * 0.9)
    capped = sources.Corpus(str(jsonl_corpus), text_column="body", max_documents=50, max_val_documents=5).load_splits()
    assert capped["train"] == by_doc["train"][:50] and capped["val"] == by_doc["val"][:5]


# -- errors --------------------------------------------------------------------------------------


def test_missing_path_and_missing_column(tmp_path: Path, jsonl_corpus: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.txt.*accepted"):
        TextDataModule(source=str(tmp_path / "nowhere.txt"))
    with pytest.raises(ValueError, match=r"no text column 'text'.*\['body'\]"):
        TextDataModule(source=str(jsonl_corpus), cache_dir=str(tmp_path)).prepare_data()


def test_empty_corpus_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("<|endoftext|>\n\n<|endoftext|>\n")
    with pytest.raises(ValueError, match="has no documents"):
        TextDataModule(source=str(path), cache_dir=str(tmp_path)).prepare_data()


def test_hub_name_offline_fails_fast_pointing_to_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fast: offline, the error comes without a connection attempt (a probe would wait for its timeout)
    attempts: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address))
    with pytest.raises(hub.DataSourceError, match=r"unreachable.*--data.source path/to"):
        TextDataModule(source="roneneldan/TinyStories", cache_dir=str(tmp_path)).prepare_data()
    assert attempts == []


def test_hub_probe_honours_offline_env(monkeypatch: pytest.MonkeyPatch, no_network) -> None:
    assert REAL_HUB_PROBE() is False


def test_block_size_too_large(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = char_module(jsonl_corpus, tmp_path, block_size=100_000)
    with pytest.raises(ValueError, match=r"split has \d+ tokens.*lower --data.block_size"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="Lower --data.batch_size"):
        char_module(jsonl_corpus, tmp_path, block_size=64, batch_size=5000).setup("fit")


# -- data module ---------------------------------------------------------------------------------


def test_char_vocab_comes_from_cache_metadata(jsonl_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    text = "".join(sources.read_documents(str(jsonl_corpus), text_column="body"))
    assert char_module(jsonl_corpus, tmp_path).vocab_size == len(set(text) | {"\n"})
    monkeypatch.setattr(sources.Corpus, "load_splits", lambda self: must_not_run())
    assert char_module(jsonl_corpus, tmp_path).vocab_size == len(set(text) | {"\n"})


def test_train_windows_are_pure_sharded_and_disjoint(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = char_module(jsonl_corpus, tmp_path)
    dm.setup("fit")
    tokens = np.asarray(dm._tokens("train"))
    x, y = dm.train_batch(7, rank=0, world_size=1)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    again = char_module(jsonl_corpus, tmp_path)
    assert torch.equal(again.train_batch(7)[0], x) and not torch.equal(dm.train_batch(8)[0], x)

    global_x, global_y = dm.train_batch(3, 0, 1)
    dm2 = char_module(jsonl_corpus, tmp_path, batch_size=2)  # 2 processes x 2 = global batch of 4
    ranks = [dm2.train_batch(3, rank, 2) for rank in (0, 1)]
    assert torch.equal(ranks[0][0], global_x[0::2]) and torch.equal(ranks[1][0], global_x[1::2])
    assert torch.equal(ranks[1][1], global_y[1::2])

    offsets = expected_offsets(1337, 3, len(tokens), 16, 4)
    for row, start in enumerate(offsets):
        assert global_x[row].tolist() == tokens[start:start + 16].tolist()
        assert global_y[row].tolist() == tokens[start + 1:start + 17].tolist()
    ordered = np.sort(offsets)
    assert (np.diff(ordered) >= 17).all()


def test_train_loader_resumes_at_trainer_step(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = char_module(jsonl_corpus, tmp_path)
    first = next(iter(dm.train_dataloader()))
    assert torch.equal(first[0], dm.train_batch(0)[0])
    dm.trainer = SimpleNamespace(global_step=5, accumulate_grad_batches=2, global_rank=1, world_size=2)
    batches = iter(dm.train_dataloader())
    for step in (10, 11):
        x, y = next(batches)
        expected = dm.train_batch(step, rank=1, world_size=2)
        assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])


def test_validation_windows_fixed_and_partitioned(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = char_module(jsonl_corpus, tmp_path, val_windows=10, val_batch_size=3)
    dm.setup("validate")
    val = np.asarray(dm._tokens("val"))
    starts = dm.val_starts()
    assert len(starts) == min(10, len(val) // 17) == 10
    assert starts[0] == 0 and starts[-1] == len(val) - 17 and (np.diff(starts) >= 17).all()
    np.testing.assert_array_equal(starts, char_module(jsonl_corpus, tmp_path, val_windows=10).val_starts())

    batches = list(dm.val_dataloader())
    assert len(dm.val_dataloader()) == len(batches)
    assert [len(x) for x, _ in batches] == [3, 3, 3, 1]
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    for row, start in enumerate(starts):
        assert xs[row].tolist() == val[start:start + 16].tolist()
        assert ys[row].tolist() == val[start + 1:start + 17].tolist()
    shards = [torch.cat([x for x, _ in dm.val_batches(rank, 3)]) for rank in range(3)]
    assert sum(len(s) for s in shards) == 10
    for rank, shard in enumerate(shards):
        assert torch.equal(shard, xs[rank::3])
    assert torch.equal(dm.probe_batch(), xs[:8]) and torch.equal(dm.probe_batch(2), xs[:2])
    with pytest.raises(ConfigError, match="no test split"):  # never the validation windows again
        dm.test_dataloader()


def test_validation_uses_all_windows_that_fit(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = char_module(jsonl_corpus, tmp_path, block_size=1000, batch_size=1, val_windows=64)
    n_val = len(dm._tokens("val"))
    starts = dm.val_starts()
    assert len(starts) == n_val // 1001 and (np.diff(starts) >= 1001).all() and starts[-1] + 1001 <= n_val


# -- document windows ----------------------------------------------------------------------------


def gpt2_module(corpus: Path, tmp_path: Path, **kwargs) -> TextDataModule:
    options = dict(text_column="body", block_size=16, batch_size=4, windows="document", cache_dir=str(tmp_path / "g"))
    return TextDataModule(source=str(corpus), **{**options, **kwargs})


def test_document_train_windows_inside_documents_pure_and_sharded(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = gpt2_module(jsonl_corpus, tmp_path)
    tokens = np.asarray(dm._tokens("train"))
    chunks = np.array(reference_chunk_starts(tokens, 50256, 17))
    assert len(chunks) > 100  # documents of ~45 tokens: 2 chunks each
    for step in range(5):
        x, y = dm.train_batch(step)
        rng = np.random.Generator(np.random.PCG64([1337, step]))
        starts = chunks[rng.choice(len(chunks), size=4, replace=False)]
        for row, start in enumerate(starts):
            window = tokens[start:start + 17]
            doc_start = np.flatnonzero(tokens[:start] == 50256)[-1:] + 1 if start else np.array([0])
            assert 50256 not in window and (start - int(doc_start.sum())) % 17 == 0
            assert x[row].tolist() == window[:-1].tolist() and y[row].tolist() == window[1:].tolist()
    global_x, global_y = dm.train_batch(3)
    assert torch.equal(gpt2_module(jsonl_corpus, tmp_path).train_batch(3)[0], global_x)
    assert not torch.equal(dm.train_batch(4)[0], global_x)
    dm2 = gpt2_module(jsonl_corpus, tmp_path, batch_size=2)
    for rank in (0, 1):
        x, y = dm2.train_batch(3, rank, 2)
        assert torch.equal(x, global_x[rank::2]) and torch.equal(y, global_y[rank::2])


def test_document_validation_windows_fixed(jsonl_corpus: Path, tmp_path: Path) -> None:
    dm = gpt2_module(jsonl_corpus, tmp_path, val_windows=10, probe_windows=3)
    val = np.asarray(dm._tokens("val"))
    chunks = np.array(reference_chunk_starts(val, 50256, 17))
    starts = dm.val_starts()
    np.testing.assert_array_equal(starts, chunks[np.arange(10) * (len(chunks) - 1) // 9])
    np.testing.assert_array_equal(starts, gpt2_module(jsonl_corpus, tmp_path, val_windows=10).val_starts())
    xs = torch.cat([x for x, _ in dm.val_batches()])
    assert xs.tolist() == [val[s:s + 16].tolist() for s in starts] and torch.equal(dm.probe_batch(), xs[:3])
    everything = gpt2_module(jsonl_corpus, tmp_path, val_windows=10_000).val_starts()
    np.testing.assert_array_equal(everything, chunks)  # fewer chunks than val_windows: all of them


def test_document_windows_errors(jsonl_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of random, document"):
        gpt2_module(jsonl_corpus, tmp_path, windows="sentence")
    with pytest.raises(ValueError, match="end-of-text token, such as gpt2"):
        char_module(jsonl_corpus, tmp_path, windows="document").prepare_data()
    with pytest.raises(ValueError, match="val split has no document of at least"):
        gpt2_module(jsonl_corpus, tmp_path, block_size=200).prepare_data()
    with pytest.raises(ValueError, match=r"\d+ whole-document chunks.*Lower --data.batch_size"):
        gpt2_module(jsonl_corpus, tmp_path, batch_size=5000).setup("fit")
