"""Bounded jobs and bounded serving: caps by recency, chunked tokenising, scoring and bootstrap give the
results of the whole-at-once versions, and serving clips its input before tokenising."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from eduranker.pipeline import bootstrap
from eduranker.pipeline.bounds import newest
from eduranker.pipeline.encoding import encode_pairs, encode_query_documents, longest_first
from eduranker.pipeline.pairs import Pair

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _pair(i: int, minutes: int) -> Pair:
    return Pair(f"i{i:03d}", f"q{i}", f"r{i}", f"query {i}", f"doc {i}", float(i % 2), T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize(
    ("minutes", "cap", "kept_ids"),
    [
        ([5, 1, 9, 3], 0, ["i000", "i001", "i002", "i003"]),  # no cap
        ([5, 1, 9, 3], 4, ["i000", "i001", "i002", "i003"]),  # cap not reached
        ([5, 1, 9, 3], 2, ["i000", "i002"]),  # the two newest, in input order
        ([5, 5, 5, 1], 2, ["i001", "i002"]),  # ties by inference id, newest id first
        ([], 3, []),
    ],
)
def test_newest_keeps_the_most_recent_pairs_in_their_order(minutes, cap, kept_ids):
    pairs = [_pair(i, m) for i, m in enumerate(minutes)]
    bounded = newest(pairs, cap)
    assert [p.inference_id for p in bounded.kept] == kept_ids
    assert bounded.left_out == len(pairs) - len(kept_ids)
    report = bounded.report()
    assert report["kept"] == len(kept_ids) and report["offered"] == len(pairs)
    assert (report["oldest_kept"] is None) == (bounded.left_out == 0)


def test_a_capped_report_names_the_oldest_feedback_kept():
    bounded = newest([_pair(i, m) for i, m in enumerate([5, 1, 9, 3])], 2)
    assert bounded.report()["oldest_kept"] == (T0 + timedelta(minutes=5)).isoformat()


@pytest.mark.parametrize(
    ("first", "second", "budget", "expected"),
    [
        (3, 4, 10, (3, 4)),
        (2, 20, 9, (2, 7)),
        (20, 2, 9, (7, 2)),
        (13, 7, 9, (5, 4)),
        (7, 13, 9, (4, 5)),
        (9, 9, 9, (4, 5)),
    ],
)
def test_longest_first_lengths(first, second, budget, expected):
    assert longest_first(first, second, budget) == expected


QUERIES = ["photosynthesis", "w " * 13, "how do vaccines train the immune system " * 6, "q"]
DOCUMENTS = ["Plants turn light into sugar.", "w " * 13, "A vaccine shows the immune system a piece " * 9, "w " * 14]


def test_chunked_tokenising_equals_one_call(tiny_tokenizer):
    queries, documents = QUERIES * 3, DOCUMENTS[::-1] * 3
    whole = encode_pairs(tiny_tokenizer, queries, documents, max_length=32, chunk=10_000)
    chunked = encode_pairs(tiny_tokenizer, queries, documents, max_length=32, chunk=5)
    reference = tiny_tokenizer(queries, documents, truncation="longest_first", max_length=32)
    for encoded in (whole, chunked):
        assert [encoded.pair(i)[0].tolist() for i in range(len(encoded))] == reference["input_ids"]
        assert [encoded.pair(i)[1].tolist() for i in range(len(encoded))] == reference["token_type_ids"]


@pytest.mark.parametrize("max_length", [12, 13, 16, 48])
def test_the_query_tokenised_once_gives_the_tokenizers_own_pairs(tiny_tokenizer, max_length):
    for query in QUERIES:
        once = encode_query_documents(tiny_tokenizer, query, DOCUMENTS, max_length)
        pairs = encode_pairs(tiny_tokenizer, [query] * len(DOCUMENTS), DOCUMENTS, max_length)
        np.testing.assert_array_equal(once.starts, pairs.starts)
        np.testing.assert_array_equal(once.ids, pairs.ids)
        np.testing.assert_array_equal(once.type_ids, pairs.type_ids)


@pytest.mark.parametrize(("query_tokens", "max_length"), [(1, 48), (4, 48), (4, 9), (40, 16), (64, 48)])
def test_a_query_keeps_its_first_query_tokens_and_the_document_the_rest(tiny_tokenizer, query_tokens, max_length):
    documents = DOCUMENTS * 2
    for query in QUERIES:
        encoded = encode_query_documents(tiny_tokenizer, query, documents, max_length, query_tokens=query_tokens)
        query_ids = tiny_tokenizer(query, add_special_tokens=False)["input_ids"][:query_tokens]
        kept_query = tiny_tokenizer.decode(query_ids)  # the query's first tokens as text: their own tokens
        assert tiny_tokenizer(kept_query, add_special_tokens=False)["input_ids"] == query_ids
        for i, document in enumerate(documents):
            # The tokenizer's own pair encoding of the kept query and the document.
            expected = tiny_tokenizer(kept_query, document, truncation="longest_first", max_length=max_length)
            ids, types = encoded.pair(i)
            assert ids.tolist() == expected["input_ids"]
            assert types is not None and types.tolist() == expected["token_type_ids"]
            assert ids.size <= max_length


def test_a_long_query_costs_no_more_tokens_than_the_query_budget(tiny_tokenizer):
    short, long = "plants light", "how do plants turn light into sugar " * 400
    documents = ["Photosynthesis explained in a few words.", "w " * 30]
    budget = 10
    short_pairs = encode_query_documents(tiny_tokenizer, short, documents, 256, query_tokens=budget)
    long_pairs = encode_query_documents(tiny_tokenizer, long, documents, 256, query_tokens=budget)
    # The long query is cut to its budget, not to max_length: each pair grows by at most the budget.
    assert (long_pairs.lengths - short_pairs.lengths).max() <= budget
    assert long_pairs.lengths.max() < 256


def test_chunked_scoring_equals_one_chunk(tiny_model_path):
    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.scoring import score_pairs

    model, tokenizer = load_cross_encoder(tiny_model_path, torch.device("cpu"), seed=3)
    queries, documents = QUERIES * 2, DOCUMENTS * 2
    kwargs = {"device": torch.device("cpu"), "max_length": 32, "batch_size": 3}
    whole = score_pairs(model, tokenizer, queries, documents, **kwargs)
    chunked = score_pairs(model, tokenizer, queries, documents, chunk=3, **kwargs)
    np.testing.assert_allclose(chunked, whole, atol=1e-6, rtol=0)
    assert len(set(np.round(whole, 5))) > 1


def test_chunked_bootstrap_gives_the_same_intervals(monkeypatch):
    rng = np.random.default_rng(0)
    n = 600
    queries = [f"q{i % 60}" for i in range(n)]
    labels = (rng.random(n) > 0.6).astype(float)
    a = rng.random(n)
    b = a + 0.2 * labels * rng.random(n)
    kwargs = {"samples": 300, "confidence": 0.95, "seed": 4}
    whole = bootstrap.paired_bootstrap(labels, a, b, queries, **kwargs)
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", n * 7)  # 7 resamples a chunk: 43 chunks
    chunked = bootstrap.paired_bootstrap(labels, a, b, queries, **kwargs)
    assert chunked == whole
    assert whole["roc_auc"].low is not None and whole["roc_auc"].low > 0
    counts = bootstrap.resample_counts(60, 30, 4)
    np.testing.assert_array_equal(np.vstack(list(bootstrap.resample_chunks(60, 30, 4, 7))), counts)


def test_serving_clips_texts_before_tokenising_and_scores_as_the_pipeline(tiny_model_path):
    from eduranker.pipeline.scoring import score_pairs
    from eduranker.serving.loaded import load_checked

    loaded = load_checked(tiny_model_path, None, torch.device("cpu"), max_length=64, batch_size=4)
    head = "how do plants turn light into sugar "
    query = head * 30_000  # about a megabyte
    documents = ["Photosynthesis explained.", "The Roman emperors. " * 50_000, "Sugar"]
    clip = loaded.max_text_chars
    clipped = [d[:clip] for d in documents]
    served = loaded.score(query, documents)
    expected = score_pairs(loaded.model, loaded.tokenizer, [query[:clip]] * 3, clipped, device=torch.device("cpu"),
                           max_length=64)  # fmt: skip
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    assert loaded.score(query, []).size == 0


def test_a_version_is_served_with_the_query_tokens_it_was_trained_with(tiny_model_path, tmp_path):
    import json
    import shutil

    from eduranker.pipeline.encoding import QUERY_TOKENS
    from eduranker.pipeline.scoring import score_encoded
    from eduranker.serving.loaded import load_checked, trained_query_tokens

    folder = tmp_path / "v0001"
    shutil.copytree(tiny_model_path, folder)
    assert trained_query_tokens(folder) == QUERY_TOKENS  # no metadata of ours: the base model
    (folder / "training_metadata.json").write_text(json.dumps({"hyperparameters": {"max_length": 64}}))
    assert trained_query_tokens(folder) is None  # trained before the budget: served uncut
    (folder / "training_metadata.json").write_text(json.dumps({"hyperparameters": {"query_tokens": 3}}))
    loaded = load_checked(folder, "v0001", torch.device("cpu"), max_length=64, batch_size=4)
    assert loaded.query_tokens == 3
    query, documents = "how do plants turn light into sugar", ["Photosynthesis explained.", "Roman emperors"]
    cut = encode_query_documents(loaded.tokenizer, query, documents, 64, query_tokens=3)
    with torch.inference_mode():
        expected = score_encoded(loaded.model, cut, device=torch.device("cpu"), batch_size=4)
    np.testing.assert_allclose(loaded.score(query, documents), expected, atol=1e-5, rtol=0)


def test_token_types_go_only_to_a_model_that_takes_them(tiny_model_path):
    from transformers import AutoTokenizer

    from eduranker.pipeline.encoding import collate

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    assert "token_type_ids" in collate(encode_pairs(tokenizer, QUERIES, DOCUMENTS, 32), [0, 1])
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # as DistilBERT's, RoBERTa's, MPNet's
    encoded = encode_pairs(tokenizer, QUERIES, DOCUMENTS, 32)
    assert encoded.type_ids is None and set(collate(encoded, [0, 1])) == {"input_ids", "attention_mask"}
