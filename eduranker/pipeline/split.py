"""The stable held-out split: each query's side is fixed for good by a keyed hash of its key.

A query is held out when HMAC-SHA256(key, query_key(query)), read as a number in [0, 1), is below the
test fraction, with the query key's version recorded in the epoch (`eduranker/pipeline/text.py`: an
epoch recorded before version 2 keeps version 1). The side depends on nothing but the query and the
(key, fraction, key version) of the evaluation epoch, so adding feedback never moves a query, no version
trains on a held-out query, and each version's held-out queries are held out for every later version of
the same epoch. The key is secret to the users (they cannot aim a query at either side) and recorded in
MongoDB with the fraction.
Pure functions: no database.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from eduranker.pipeline.pairs import Pair
from eduranker.pipeline.text import LATEST, query_key
from eduranker.records import SplitSummary

_SCALE = float(2**64)


@dataclass(frozen=True)
class SplitKey:
    """One evaluation epoch: the hash key and the fraction of queries held out under it."""

    epoch: int
    key: str  # hex
    test_fraction: float
    query_key_version: int = LATEST  # the epoch's recorded one: the same query text keeps its side

    def query_of(self, text: str) -> str:
        """The query key this epoch's split hashes (and its snapshot deduplicates on)."""
        return query_key(text, self.query_key_version)

    @property
    def fingerprint(self) -> str:
        """A short name for the key that reveals nothing of it (for metadata and logs)."""
        return hashlib.sha256(bytes.fromhex(self.key)).hexdigest()[:12]

    def describe(self) -> SplitSummary:
        return {"epoch": self.epoch, "test_fraction": self.test_fraction, "key_fingerprint": self.fingerprint,
                "query_key_version": self.query_key_version}  # fmt: skip


def side_value(query: str, key: SplitKey) -> float:
    """The query's place in [0, 1) under this key: held out below the test fraction."""
    digest = hmac.new(bytes.fromhex(key.key), key.query_of(query).encode("utf-8"), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_heldout(query: str, key: SplitKey) -> bool:
    return side_value(query, key) < key.test_fraction


def stable_split(pairs: Iterable[Pair], key: SplitKey) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): every pair of a query goes to that query's side."""
    train: list[Pair] = []
    test: list[Pair] = []
    for pair in pairs:
        (test if is_heldout(pair.query, key) else train).append(pair)
    return train, test


def unseen_by(pairs: Iterable[Pair], trained_under: SplitKey | None) -> tuple[list[Pair], list[Pair]]:
    """Split `pairs` into (held out under `trained_under` as well, trained on there): a model trained
    in that epoch trained on no pair of the first list. `trained_under` None (a model from before stable
    splits) is unknown: every pair is returned as possibly seen."""
    if trained_under is None:
        return [], list(pairs)
    unseen: list[Pair] = []
    seen: list[Pair] = []
    for pair in pairs:
        (unseen if is_heldout(pair.query, trained_under) else seen).append(pair)
    return unseen, seen
