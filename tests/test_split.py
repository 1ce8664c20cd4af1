"""The stable split: a query's side is fixed by a keyed hash, whatever else arrives (property tests)."""

import random
import string
from datetime import UTC, datetime, timedelta

import pytest

from eduranker.pipeline.pairs import Pair, query_key
from eduranker.pipeline.split import SplitKey, is_heldout, side_value, stable_split, unseen_by

KEY = SplitKey(1, "5e" * 32, 0.2)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _query(rng: random.Random) -> str:
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 6))]
    return " ".join(words)


def _pairs(rng: random.Random, queries: list[str], n: int, start: int = 0) -> list[Pair]:
    return [
        Pair(
            str(start + i),
            "q",
            f"r{rng.randint(0, 50)}",
            rng.choice(queries),
            "doc",
            float(rng.random() < 0.4),
            T0 + timedelta(seconds=start + i),
        )  # fmt: skip
        for i in range(n)
    ]


def _keys(pairs: list[Pair]) -> set[str]:
    return {query_key(p.query) for p in pairs}


@pytest.mark.parametrize("seed", range(20))
def test_adding_feedback_never_moves_a_query_and_held_out_sets_only_grow(seed):
    rng = random.Random(seed)
    queries = [_query(rng) for _ in range(rng.randint(5, 300))]
    pairs = _pairs(rng, queries, rng.randint(10, 800))
    train, test = stable_split(pairs, KEY)
    # Later jobs see more feedback: old queries again, and new ones.
    queries += [_query(rng) for _ in range(rng.randint(0, 100))]
    grown = pairs + _pairs(rng, queries, rng.randint(0, 800), start=len(pairs))
    rng.shuffle(grown)
    train2, test2 = stable_split(grown, KEY)
    assert _keys(train) <= _keys(train2) and _keys(test) <= _keys(test2)
    assert _keys(train2).isdisjoint(_keys(test2))  # no training pair's query is held out
    assert set(test) <= set(test2)  # every held-out pair stays held out
    assert len(train2) + len(test2) == len(grown)


def test_the_side_ignores_case_spacing_width_and_invisible_characters():
    variants = ["Photosynthesis basics", "  photosynthesis\tBASICS ", "photo\u200bsynthesis basics",
                "ｐｈｏｔｏｓｙｎｔｈｅｓｉｓ basics", "photosynthesis\u00ad basics\u200d"]  # fmt: skip
    assert len({query_key(v) for v in variants}) == 1
    assert len({side_value(v, KEY) for v in variants}) == 1


def test_the_fraction_held_out_is_the_test_fraction_and_depends_on_the_key():
    queries = [f"query number {i}" for i in range(20_000)]
    share = sum(is_heldout(q, KEY) for q in queries) / len(queries)
    assert abs(share - 0.2) < 0.015
    other = SplitKey(2, "a7" * 32, 0.2)
    agree = sum(is_heldout(q, KEY) == is_heldout(q, other) for q in queries) / len(queries)
    assert agree < 0.75  # independent keys agree on about 0.8² + 0.2² = 0.68 of queries


def test_a_larger_fraction_under_the_same_key_keeps_every_held_out_query():
    queries = [f"q {i}" for i in range(2000)]
    wider = SplitKey(2, KEY.key, 0.3)
    assert {q for q in queries if is_heldout(q, KEY)} < {q for q in queries if is_heldout(q, wider)}


def test_unseen_by_keeps_only_pairs_held_out_in_the_other_epoch_too():
    rng = random.Random(3)
    pairs = _pairs(rng, [_query(rng) for _ in range(400)], 2000)
    _, test = stable_split(pairs, KEY)
    other = SplitKey(2, "a7" * 32, 0.2)
    unseen, seen = unseen_by(test, other)
    assert len(unseen) + len(seen) == len(test)
    assert all(is_heldout(p.query, other) for p in unseen) and not any(is_heldout(p.query, other) for p in seen)
    assert unseen_by(test, None) == ([], test)  # a model from before stable splits: nothing known unseen


def test_the_fingerprint_names_the_key_without_revealing_it():
    assert KEY.fingerprint != KEY.key[:12] and len(KEY.fingerprint) == 12
    assert KEY.describe() == {"epoch": 1, "test_fraction": 0.2, "key_fingerprint": KEY.fingerprint,
                              "query_key_version": KEY.query_key_version}  # fmt: skip


def _split(pairs, key=KEY):
    from worker.stages import Split

    train, test = stable_split(pairs, key)
    return Split(train, test, key)


def test_the_gate_judges_only_held_out_pairs_the_champion_never_trained_on():
    from eduranker.pipeline.gate import GateRule
    from worker.stages import fair_heldout

    rng = random.Random(5)
    split = _split(_pairs(rng, [_query(rng) for _ in range(3000)], 20_000))
    other = SplitKey(2, "a7" * 32, 0.2)
    rule = GateRule(0.005, 0.95, 1000, min_pairs=40, min_queries=8, max_regression=0.02, seed=0, slice_min_pairs=100)
    # Same epoch as the champion: every held-out pair is fair.
    judged, fairness = fair_heldout(split, [KEY], rule)
    assert judged == split.test and not fairness["champion_may_have_seen"]
    # A champion of another epoch: only the pairs it held out too; never a pair it trained on.
    judged, fairness = fair_heldout(split, [other], rule)
    assert judged and all(is_heldout(p.query, other) for p in judged)
    assert fairness["excluded_champion_trained"] == len(split.test) - len(judged) > 0
    assert not fairness["champion_may_have_seen"]
    # A champion from before stable splits: unknown, so all of them, and the gate is told.
    judged, fairness = fair_heldout(split, [None], rule)
    assert judged == split.test and fairness["champion_may_have_seen"]
    # The base model (no champion) trained on none of it.
    assert fair_heldout(split, [], rule)[0] == split.test


def test_when_too_few_unseen_pairs_remain_all_are_judged_and_the_gate_is_told():
    from eduranker.pipeline.gate import GateRule
    from worker.stages import fair_heldout

    rng = random.Random(6)
    split = _split(_pairs(rng, [_query(rng) for _ in range(60)], 400))
    rule = GateRule(0.005, 0.95, 1000, len(split.test), min_queries=2, max_regression=0.02, seed=0, slice_min_pairs=100)
    judged, fairness = fair_heldout(split, [SplitKey(2, "a7" * 32, 0.2)], rule)
    assert judged == split.test and fairness["champion_may_have_seen"]


@pytest.mark.integration
def test_epochs_are_recorded_and_a_new_fraction_or_key_starts_the_next(db):
    from eduranker.store import evaluation_epochs as epochs

    first = epochs.current_epoch(db, 0.2, by="job a")
    assert first.epoch == 1 and len(first.key) == 64
    assert epochs.current_epoch(db, 0.2, by="job b") == first  # kept for good
    wider = epochs.current_epoch(db, 0.3, by="job c")
    assert (wider.epoch, wider.key, wider.test_fraction) == (2, first.key, 0.3)  # same key, new fraction
    rekeyed = epochs.current_epoch(db, 0.3, "ab" * 32, by="job d")
    assert (rekeyed.epoch, rekeyed.key) == (3, "ab" * 32)
    assert epochs.current_epoch(db, 0.3, by="job e") == rekeyed
    assert epochs.get_epoch(db, 1) == first and epochs.latest_epoch(db) == rekeyed
