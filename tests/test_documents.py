"""Hub corpora are read on demand: views over Arrow data shuffle, split and tokenize exactly as lists."""

from __future__ import annotations

import datasets
import numpy as np

from actsweep.data import cache, sources
from actsweep.data.documents import Documents, arrow_documents
from actsweep.data.tokenizers import get_tokenizer

TEXTS = [f"story {i}: " + "word " * (i % 13) for i in range(2500)]


def reads_counted(texts: list[str]) -> tuple[Documents, list[int]]:
    sizes: list[int] = []

    def take(index: np.ndarray) -> list[str]:
        sizes.append(len(index))
        return [texts[i] for i in index]

    return Documents.over(take, len(texts)), sizes


def test_views_behave_like_lists_and_read_in_batches():
    docs, reads = reads_counted(TEXTS)
    shuffled, listed = sources._shuffled(docs), sources._shuffled(TEXTS)
    assert reads == []  # shuffling and splitting read nothing
    train, val = sources._split_documents(shuffled, 0.1)
    assert list(train) == sources._split_documents(listed, 0.1)[0] and list(val) == listed[-250:]
    assert max(reads) == 1000  # never more than a batch at a time
    assert train[3] == listed[3] and list(train[:5]) == listed[:5]
    assert sources._split_chars(docs, 0.1) == sources._split_chars(TEXTS, 0.1)
    assert docs.mapped(str.upper)[1] == TEXTS[1].upper()


def test_arrow_documents_build_the_same_cache_as_a_list(tmp_path):
    dataset = datasets.Dataset.from_dict({"text": TEXTS, "id": list(range(len(TEXTS)))})
    docs = sources._shuffled(arrow_documents(dataset, "text"))
    tokenizer = get_tokenizer("gpt2")
    lazy = cache.build("lazy", docs, tokenizer, {}, tmp_path)
    eager = cache.build("eager", sources._shuffled(TEXTS), tokenizer, {}, tmp_path)
    assert np.array_equal(lazy.tokens, eager.tokens) and lazy.meta["n_documents"] == len(TEXTS)
