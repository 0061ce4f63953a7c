"""Window arithmetic (`actsweep.data.windows`) as pure functions, against plain loops, the spec written
out (`references.py`) and hand-computed cases. Fast: no data module, no files."""

from __future__ import annotations

import numpy as np
import pytest

from actsweep.data import windows
from actsweep.data.windows import (
    document_chunk_starts,
    document_window_starts,
    evenly_spread,
    random_window_starts,
    rank_rows,
    step_rng,
    val_window_starts,
)
from actsweep.errors import ConfigError
from references import expected_offsets, reference_chunk_starts, stream

def test_document_chunk_starts_match_a_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    # lengths 3 (< chunk), 5 (== chunk), 0 0 (consecutive eots), 12 (2 chunks + 2), 1, 11; tail of 17
    tokens = stream([3, 5, 0, 0, 12, 1, 11, 17], eot=0, rng=rng, terminated=False)
    expected = [4, 12, 17, 27, 32, 39, 44, 49]  # doc starts 0 4 10 11 12 25 27 39
    assert reference_chunk_starts(tokens, 0, 5) == expected
    monkeypatch.setattr(windows, "EOT_SCAN_BLOCK", 7)  # document boundaries straddle scan blocks
    for terminated in (True, False):
        t = stream([3, 5, 0, 0, 12, 1, 11, 17], eot=0, rng=rng, terminated=terminated)
        got = document_chunk_starts(t, 0, 5)
        assert got.dtype == np.int64 and got.tolist() == expected
    for seed in range(20):
        r = np.random.default_rng(seed)
        t = r.integers(0, 8, size=int(r.integers(0, 300))).astype(np.uint16)  # eot 0: ~1 in 8 tokens
        for length in (1, 2, 5):
            assert document_chunk_starts(t, 0, length).tolist() == reference_chunk_starts(t, 0, length)
    assert document_chunk_starts(np.zeros(4, np.uint16), 0, 1).tolist() == []



def test_evenly_spread_by_hand():
    assert evenly_spread(5, 8).tolist() == [0, 2, 4, 6, 8]
    assert evenly_spread(3, 10).tolist() == [0, 5, 10]
    assert evenly_spread(4, 10).tolist() == [0, 3, 6, 10]  # floor of i * 10 / 3
    assert evenly_spread(1, 10).tolist() == [0]
    assert evenly_spread(0, 10).tolist() == []
    assert evenly_spread(3, 10).dtype == np.int64


def test_step_rng_is_a_pure_function_of_seed_and_step():
    draw = step_rng(3, 5).integers(0, 2**62, size=4).tolist()
    assert draw == step_rng(3, 5).integers(0, 2**62, size=4).tolist()
    assert draw != step_rng(3, 6).integers(0, 2**62, size=4).tolist()
    assert draw != step_rng(4, 5).integers(0, 2**62, size=4).tolist()
    assert draw != step_rng(5, 3).integers(0, 2**62, size=4).tolist()  # (seed, step) is ordered


def test_rank_rows_shard_one_global_batch():
    whole = rank_rows(step_rng(0, 1), 50, 6, 0, 1)
    assert len(set(whole.tolist())) == 6 and 0 <= whole.min() and whole.max() < 50
    shards = [rank_rows(step_rng(0, 1), 50, 3, rank, 2) for rank in (0, 1)]
    assert shards[0].tolist() == whole[0::2].tolist() and shards[1].tolist() == whole[1::2].tolist()
    assert sorted(rank_rows(step_rng(0, 1), 6, 3, 0, 2).tolist() + rank_rows(step_rng(0, 1), 6, 3, 1, 2).tolist()) == list(range(6))
    with pytest.raises(ConfigError, match=r"^5 distinct windows cannot fill a global batch of 6$"):
        rank_rows(step_rng(0, 1), 5, 3, 0, 2)


def test_random_windows_equal_the_spec_and_never_overlap():
    n_tokens, block = 1000, 9
    for step in range(20):
        starts = random_window_starts(11, step, n_tokens, block, 8)
        assert starts.tolist() == expected_offsets(11, step, n_tokens, block, 8).tolist()
        ordered = np.sort(starts)
        assert (np.diff(ordered) >= block + 1).all() and ordered[0] >= 0 and ordered[-1] + block + 1 <= n_tokens
        assert len(set((starts % (block + 1)).tolist())) == 1  # one shift per step
        sharded = [random_window_starts(11, step, n_tokens, block, 4, rank, 2) for rank in (0, 1)]
        assert sharded[0].tolist() == starts[0::2].tolist() and sharded[1].tolist() == starts[1::2].tolist()
    assert random_window_starts(11, 0, n_tokens, block, 8, rank=0, world_size=1).tolist() == \
        random_window_starts(11, 0, n_tokens, block, 8).tolist()
    # The shift covers [0, block]: over many steps every residue appears, and none beyond.
    shifts = {int(random_window_starts(0, step, n_tokens, block, 1)[0] % (block + 1)) for step in range(200)}
    assert shifts == set(range(block + 1))
    # A stream of exactly 8 windows still fills a batch of 8 (only when the shift is 0).
    full = [s for s in range(30) if step_rng(2, s).integers(0, block + 1) == 0][0]
    assert sorted(random_window_starts(2, full, 80, block, 8).tolist()) == list(range(0, 80, 10))


def test_document_windows_are_distinct_chunks_sharded():
    chunks = np.arange(0, 400, 20, dtype=np.int64)  # 20 chunks
    for step in range(10):
        starts = document_window_starts(4, step, chunks, 6)
        assert len(set(starts.tolist())) == 6 and set(starts.tolist()) <= set(chunks.tolist())
        sharded = [document_window_starts(4, step, chunks, 3, rank, 2) for rank in (0, 1)]
        assert sharded[0].tolist() == starts[0::2].tolist() and sharded[1].tolist() == starts[1::2].tolist()
    assert document_window_starts(4, 0, chunks, 6).tolist() != document_window_starts(4, 1, chunks, 6).tolist()
    assert document_window_starts(4, 0, chunks, 6).tolist() != document_window_starts(5, 0, chunks, 6).tolist()
    assert document_window_starts(4, 0, chunks, 6, rank=0, world_size=1).tolist() == \
        document_window_starts(4, 0, chunks, 6).tolist()
    assert sorted(document_window_starts(4, 0, chunks[:6], 6).tolist()) == chunks[:6].tolist()  # exactly enough


def test_validation_windows_by_hand():
    assert val_window_starts(3, 100, 9).tolist() == [0, 45, 90]  # 10-token windows, the last ends at 100
    assert val_window_starts(10, 35, 9).tolist() == [0, 12, 25]  # only 3 fit: all of them, spread
    assert val_window_starts(2, 20, 9).tolist() == [0, 10]  # exactly 2 fit
    chunks = np.array([0, 10, 20, 30, 40])
    assert val_window_starts(3, 999, 9, chunks).tolist() == [0, 20, 40]
    assert val_window_starts(10, 999, 9, chunks).tolist() == chunks.tolist()
    assert val_window_starts(2, 999, 9, chunks).tolist() == [0, 40]


def test_epoch_rows_boundaries():
    assert sorted(windows.epoch_rows(0, 0, 8, 8).tolist()) == list(range(8))  # exactly one global batch
    assert sorted(windows.epoch_rows(0, 1, 8, 4, 1, 2).tolist() + windows.epoch_rows(0, 1, 8, 4, 0, 2).tolist()) == list(range(8))
    with pytest.raises(ConfigError, match=r"^7 windows cannot fill a global batch of 8$"):
        windows.epoch_rows(0, 0, 7, 4, 0, 2)
    rows = windows.epoch_rows(3, 5, 20, 3)
    assert len(rows) == 3 and rows.dtype.kind == "i"


def test_epoch_sampling_on_the_grid_each_window_once():
    n_tokens, block = 250, 9  # 25 windows of 10 tokens; batches of 6: 4 per epoch, 1 window left out
    epoch = [random_window_starts(2, s, n_tokens, block, 6, sampling="epoch") for s in range(4)]
    starts = np.concatenate(epoch)
    assert starts.dtype == np.int64 and len(set(starts.tolist())) == 24
    assert set(starts.tolist()) <= set(range(0, 250, 10))
    sharded = [random_window_starts(2, 1, n_tokens, block, 3, rank, 2, sampling="epoch") for rank in (0, 1)]
    assert sharded[0].tolist() == epoch[1][0::2].tolist() and sharded[1].tolist() == epoch[1][1::2].tolist()
    chunks = np.arange(0, 480, 20, dtype=np.int64)  # 24 chunks, batches of 6: 4 steps visit each once
    docs = np.concatenate([document_window_starts(2, s, chunks, 6, sampling="epoch") for s in range(4, 8)])
    assert sorted(docs.tolist()) == chunks.tolist()
    assert document_window_starts(2, 5, chunks, 3, 1, 2, sampling="epoch").tolist() == \
        document_window_starts(2, 5, chunks, 6, sampling="epoch")[1::2].tolist()


def test_every_validation_window():
    assert val_window_starts(None, 35, 9).tolist() == [0, 10, 20]
    assert val_window_starts(None, 35, 9).dtype == np.int64
    chunks = np.array([0, 10, 20, 30, 40])
    assert val_window_starts(None, 999, 9, chunks).tolist() == chunks.tolist()


def test_uniform_sampling_is_nanogpts_get_batch():
    """`sampling: uniform`: every start from 0 to n_tokens - (block_size + 1) equally likely, with
    replacement (nanoGPT: `torch.randint(len(data) - block_size, (B,))`), a pure function of
    (seed, step, rank), sharded like the other modes."""
    block, n_tokens = 9, 13  # windows of 10 tokens: starts 0..3
    draws = np.concatenate([random_window_starts(5, s, n_tokens, block, 16, sampling="uniform") for s in range(500)])
    assert set(draws.tolist()) == {0, 1, 2, 3}
    assert np.bincount(draws).min() > 0.9 * len(draws) / 4  # uniform (each ~2000 of 8000)
    one_step = random_window_starts(5, 7, n_tokens, block, 16, sampling="uniform")
    assert len(set(one_step.tolist())) < 16  # with replacement: repeats within a step
    assert one_step.tolist() == random_window_starts(5, 7, n_tokens, block, 16, sampling="uniform").tolist()
    assert one_step.tolist() != random_window_starts(5, 8, n_tokens, block, 16, sampling="uniform").tolist()
    shards = [random_window_starts(5, 7, n_tokens, block, 8, rank, 2, sampling="uniform") for rank in (0, 1)]
    assert np.stack(shards, axis=1).ravel().tolist() == one_step.tolist()
    assert random_window_starts(1, 0, 10, block, 4, sampling="uniform").tolist() == [0, 0, 0, 0]  # exactly one fits
    chunks = np.array([0, 10, 20])
    assert set(np.concatenate([document_window_starts(2, s, chunks, 8, sampling="uniform") for s in range(50)]).tolist()) \
        == {0, 10, 20}
    with pytest.raises(ConfigError, match="no training window fits"):
        random_window_starts(1, 0, 9, block, 4, sampling="uniform")


def test_fresh_validation_draws_anew_at_each_evaluation_step():
    """`val_sampling: fresh`: any start, with replacement, drawn from (seed, step) apart from the
    training stream; the same on every rank, sharded as the training windows."""
    draws = np.concatenate([windows.fresh_val_rows(3, s, 4, 16) for s in range(300)])
    assert set(draws.tolist()) == {0, 1, 2, 3} and np.bincount(draws).min() > 0.9 * len(draws) / 4
    at_100 = windows.fresh_val_rows(3, 100, 1000, 64)
    assert at_100.tolist() == windows.fresh_val_rows(3, 100, 1000, 64).tolist()  # a resumed run's draw
    assert at_100.tolist() != windows.fresh_val_rows(3, 200, 1000, 64).tolist()
    assert at_100.tolist() != windows.uniform_rows(3, 100, 1000, 64).tolist()  # not the training draw
    shards = [windows.fresh_val_rows(3, 100, 1000, 64, rank, 2) for rank in (0, 1)]
    assert np.stack(shards, axis=1).ravel().tolist() == at_100.tolist()


def test_uniform_and_fresh_draws_default_to_one_process_and_shard_by_rank():
    """Defaults are rank 0 of 1; rank r of 2 holds rows r, r+2, ... of the same global draw; the
    document path passes its rank and world size through."""
    whole = windows.uniform_rows(3, 7, 50, 8)
    assert whole.tolist() == windows.uniform_rows(3, 7, 50, 8, 0, 1).tolist()
    assert whole.tolist() == np.random.Generator(np.random.PCG64([3, 7])).integers(0, 50, size=8).tolist()  # step_rng's stream
    global_draw = windows.uniform_rows(3, 7, 50, 4, 0, 1)
    halves = [windows.uniform_rows(3, 7, 50, 2, r, 2) for r in (0, 1)]
    assert halves[0].tolist() == global_draw[0::2].tolist() and halves[1].tolist() == global_draw[1::2].tolist()
    chunks = np.arange(50) * 10
    for r in (0, 1):
        got = windows.document_window_starts(3, 7, chunks, 2, r, 2, sampling="uniform")
        assert got.tolist() == (chunks[halves[r]]).tolist()
    fresh = windows.fresh_val_rows(3, 7, 50, 6)
    assert fresh.tolist() == windows.fresh_val_rows(3, 7, 50, 6, 0, 1).tolist()
    assert windows.fresh_val_rows(3, 7, 1, 3).tolist() == [0, 0, 0]  # one window: drawn every time


def test_no_window_that_fits_is_refused_naming_the_split():
    with pytest.raises(ConfigError) as train:
        windows.uniform_rows(0, 0, 0, 4)
    assert str(train.value) == "no training window fits: the training split is shorter than block_size + 1 tokens"
    with pytest.raises(ConfigError) as val:
        windows.fresh_val_rows(0, 0, 0, 4)
    assert str(val.value) == "no validation window fits: the val split is shorter than block_size + 1 tokens"
