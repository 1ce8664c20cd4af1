"""Tokenising once, dynamic padding and length buckets (pure functions, the shared tiny tokenizer)."""

import numpy as np
import pytest
import torch

from eduranker.pipeline.encoding import bucketed_batches, collate, encode_pairs, sorted_batches

QUERIES = ["photosynthesis", "how do vaccines train the immune system", "fractions", "the french revolution"]
DOCUMENTS = [
    "Plants turn light into sugar.",
    "A vaccine shows the immune system a harmless piece of a pathogen so it answers faster next time. " * 4,
    "Adding fractions with unlike denominators, step by step.",
    "Causes, events and legacy of 1789.",
]


def test_collate_equals_the_tokenizers_own_padded_batch(tiny_tokenizer):
    encoded = encode_pairs(tiny_tokenizer, QUERIES, DOCUMENTS, max_length=48)
    reference = tiny_tokenizer(QUERIES, DOCUMENTS, truncation="longest_first", max_length=48, padding=True)
    batch = collate(encoded, range(len(QUERIES)))
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].tolist() == reference[key], key
    assert batch["input_ids"].dtype == torch.long


def test_a_batch_is_as_wide_as_its_longest_pair_not_as_max_length(tiny_tokenizer):
    encoded = encode_pairs(tiny_tokenizer, QUERIES, DOCUMENTS, max_length=48)
    assert encoded.lengths.max() == 48  # the long document was truncated
    short = [0, 2]
    batch = collate(encoded, short)
    assert batch["input_ids"].shape == (2, int(encoded.lengths[short].max()))
    assert batch["attention_mask"].sum(dim=1).tolist() == encoded.lengths[short].tolist()
    padding = batch["input_ids"][batch["attention_mask"] == 0]
    assert (padding == tiny_tokenizer.pad_token_id).all()


def test_collate_keeps_the_order_it_is_given(tiny_tokenizer):
    encoded = encode_pairs(tiny_tokenizer, QUERIES, DOCUMENTS, max_length=48)
    forward, backward = collate(encoded, [1, 3]), collate(encoded, [3, 1])
    assert torch.equal(forward["input_ids"], backward["input_ids"].flip(0))


def _random_lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 200, size=n)


@pytest.mark.parametrize(("n", "batch_size"), [(1, 4), (10, 4), (64, 16), (333, 32)])
def test_buckets_cover_every_pair_once_in_batches_of_similar_length(n, batch_size):
    lengths = _random_lengths(n)
    batches = bucketed_batches(lengths, batch_size, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1
    # Buckets are consecutive runs of the length order: laid out by their shortest pair, none overlaps.
    by_start = sorted(batches, key=lambda b: lengths[b].min())
    for current, following in zip(by_start, by_start[1:], strict=False):
        assert lengths[current].max() <= lengths[following].min()


def test_buckets_pad_far_less_than_batches_in_arrival_order():
    lengths = _random_lengths(1000)

    def padded(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    arrival = [np.arange(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]
    bucketed = bucketed_batches(lengths, 32, np.random.default_rng(0))
    assert padded(bucketed) < 0.6 * padded(arrival)
    assert padded(bucketed) >= lengths.sum()


def test_bucket_order_follows_the_seed_and_ties_are_shuffled():
    lengths = np.full(64, 10)  # all ties: only the shuffle decides who shares a batch
    first = bucketed_batches(lengths, 8, np.random.default_rng(3))
    again = bucketed_batches(lengths, 8, np.random.default_rng(3))
    other = bucketed_batches(lengths, 8, np.random.default_rng(4))
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    assert [b.tolist() for b in first] != [list(range(i, i + 8)) for i in range(0, 64, 8)]


def test_sorted_batches_are_a_stable_length_order():
    lengths = np.array([5, 3, 5, 1, 3, 9, 1])
    batches = list(sorted_batches(lengths, 3))
    assert [b.tolist() for b in batches] == [[3, 6, 1], [4, 0, 2], [5]]
