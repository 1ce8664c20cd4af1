"""Tokenise pairs once, a chunk at a time into compact arrays, then cut them into length-bucketed,
dynamically padded batches.

Padding every batch to the model's max length wastes most of the arithmetic on short search
queries; sorting by length and padding to each batch's own longest pair removes that waste.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedTokenizerBase


# Pairs tokenised per call: the fast tokenizer's per-pair objects (offsets, masks, words) cost tens of
# kilobytes a pair at 256 tokens, so they live for one chunk only; what is kept is ~5 bytes a token.
ENCODE_CHUNK = 2048

# A query's tokens kept in a pair, in training, the gate and serving alike: search queries are a few
# words, so this only bounds a pasted page, which would otherwise fill every pair's `max_length` and
# cost as much as the longest documents (Nogueira and Cho's BERT reranker keeps 64 query tokens too).
QUERY_TOKENS = 64


@dataclass
class EncodedPairs:
    """Token ids of many pairs, flat: pair i is `ids[starts[i] : starts[i + 1]]` (int32, and the token
    types as int8 when the model has them)."""

    ids: np.ndarray
    starts: np.ndarray
    type_ids: np.ndarray | None
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    def __len__(self) -> int:
        return int(self.starts.size - 1)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        begin, end = int(self.starts[i]), int(self.starts[i + 1])
        return self.ids[begin:end], None if self.type_ids is None else self.type_ids[begin:end]


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair (e.g. [CLS] a [SEP] b [SEP]), read once
    from its own encoding of a known pair, so pairs can be joined from separately tokenised texts."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    types: tuple[int, int, int, int, int] | None  # prefix, first, middle, second, suffix

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> PairTemplate:
        a = tokenizer("a", add_special_tokens=False)["input_ids"]
        b = tokenizer("b", add_special_tokens=False)["input_ids"]
        both = tokenizer("a", "b", return_token_type_ids=True)
        ids, type_ids = list(both["input_ids"]), both.get("token_type_ids")
        i = next(k for k in range(len(ids)) if ids[k : k + len(a)] == a)
        j = next(k for k in range(i + len(a), len(ids)) if ids[k : k + len(b)] == b)
        types = None
        if type_ids and "token_type_ids" in tokenizer.model_input_names:  # only to a model that takes them
            last = len(ids) - 1
            types = (type_ids[0], type_ids[i], type_ids[j - 1], type_ids[j], type_ids[last])
        return cls(ids[:i], ids[i + len(a) : j], ids[j + len(b) :], types)

    @property
    def special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def longest_first(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """The lengths longest-first truncation keeps: a token off the longer text until both fit."""
    if n_first + n_second <= budget:
        return n_first, n_second
    half = budget // 2
    if n_first <= half:
        return n_first, budget - n_first
    if n_second <= half:
        return budget - n_second, n_second
    # Both longer than half: the odd token goes to the longer text (the second on a tie).
    return (budget - half, half) if n_first > n_second else (half, budget - half)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    documents: Sequence[str],
    max_length: int,
    *,
    chunk: int = ENCODE_CHUNK,
    query_tokens: int | None = QUERY_TOKENS,
) -> EncodedPairs:
    """Tokenise `chunk` pairs at a time into compact arrays: memory grows by the kept ids only. Each
    distinct text of a chunk is tokenised once; a pair is the query's first `query_tokens` tokens and the
    document, joined with the tokenizer's special tokens and truncated longest first to `max_length`
    (the tokenizer's own pair encoding wherever the query is within its budget)."""
    template = PairTemplate.of(tokenizer)
    budget = max(max_length - template.special, 0)
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for begin in range(0, len(queries), chunk):
        chunk_queries, chunk_documents = queries[begin : begin + chunk], documents[begin : begin + chunk]
        query_ids = _tokenize_distinct(tokenizer, chunk_queries, limit=query_tokens)
        document_ids = _tokenize_distinct(tokenizer, chunk_documents)
        chunk_ids, chunk_types, chunk_lengths = _join(
            template, [query_ids[q] for q in chunk_queries], [document_ids[d] for d in chunk_documents], budget
        )
        ids.append(chunk_ids)
        lengths.append(chunk_lengths)
        if chunk_types is not None:
            types.append(chunk_types)
    starts = np.zeros(len(queries) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=starts[1:])
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    type_ids = (np.concatenate(types) if types else np.zeros(0, dtype=np.int8)) if template.types else None
    return EncodedPairs(flat, starts, type_ids, tokenizer.pad_token_id or 0)


def _tokenize_distinct(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], limit: int | None = None
) -> dict[str, list[int]]:
    """Each distinct text's tokens without special tokens (its first `limit`, where given). Texts are
    tokenised whole (truncation needs their true lengths): they are clipped in characters upstream."""
    distinct = list(dict.fromkeys(texts))
    tokens = tokenizer(distinct, add_special_tokens=False, verbose=False)["input_ids"] if distinct else []
    return {text: list(ids[:limit]) for text, ids in zip(distinct, tokens, strict=True)}


def _join(
    template: PairTemplate, query_ids: Sequence[list[int]], document_ids: Sequence[list[int]], budget: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Pairs joined with the template's special tokens, each truncated longest first to `budget` tokens
    of text: flat ids, flat token types (None for a model without them) and each pair's length."""
    ids: list[int] = []
    types: list[int] = []
    lengths = np.empty(len(query_ids), dtype=np.int64)
    part_types = template.types or (0,) * 5
    for i, (query, document) in enumerate(zip(query_ids, document_ids, strict=True)):
        n_query, n_document = longest_first(len(query), len(document), budget)
        parts = (template.prefix, query[:n_query], template.middle, document[:n_document], template.suffix)
        before = len(ids)
        for part, part_type in zip(parts, part_types, strict=True):
            ids += part
            types += [part_type] * len(part)
        lengths[i] = len(ids) - before
    type_array = np.asarray(types, dtype=np.int8) if template.types is not None else None
    return np.asarray(ids, dtype=np.int32), type_array, lengths


def encode_query_documents(
    tokenizer: PreTrainedTokenizerBase,
    query: str,
    documents: Sequence[str],
    max_length: int,
    *,
    query_tokens: int | None = QUERY_TOKENS,
) -> EncodedPairs:
    """One query against many documents, encoded as `encode_pairs` encodes them (the query tokenised once)."""
    return encode_pairs(tokenizer, [query] * len(documents), documents, max_length, query_tokens=query_tokens)


def collate(encoded: EncodedPairs, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
    """The pairs at `indices` padded to the longest of them (not to max_length), with their attention mask."""
    rows = [int(i) for i in indices]
    width = int(max(encoded.lengths[rows]))
    input_ids = torch.full((len(rows), width), encoded.pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros((len(rows), width), dtype=torch.long) if encoded.type_ids is not None else None
    for row, i in enumerate(rows):
        ids, type_ids = encoded.pair(i)
        input_ids[row, : ids.size] = torch.from_numpy(ids.astype(np.int64))
        attention[row, : ids.size] = 1
        if types is not None and type_ids is not None:
            types[row, : ids.size] = torch.from_numpy(type_ids.astype(np.int64))
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length in random order; ties inside a length are shuffled too."""
    order = rng.permutation(lengths.size)
    order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Deterministic length-sorted batches for scoring (order restored by the caller)."""
    order = np.argsort(lengths, kind="stable")
    for i in range(0, order.size, batch_size):
        yield order[i : i + batch_size]
