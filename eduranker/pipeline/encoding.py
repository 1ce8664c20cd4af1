"""Tokenise pairs once, then cut them into length-bucketed, dynamically padded batches.

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


@dataclass
class EncodedPairs:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], documents: Sequence[str], max_length: int
) -> EncodedPairs:
    encoded = tokenizer(
        list(queries),
        list(documents),
        truncation="longest_first",
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
    )
    return EncodedPairs(
        input_ids=encoded["input_ids"],
        token_type_ids=encoded.get("token_type_ids"),
        pad_id=tokenizer.pad_token_id or 0,
    )


def collate(encoded: EncodedPairs, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
    """The pairs at `indices` padded to the longest of them (not to max_length), with their attention mask."""
    width = max(len(encoded.input_ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), encoded.pad_id, dtype=torch.long)
    attention = torch.zeros((len(indices), width), dtype=torch.long)
    type_ids = encoded.token_type_ids
    types = torch.zeros((len(indices), width), dtype=torch.long) if type_ids else None
    for row, i in enumerate(indices):
        ids = encoded.input_ids[i]
        input_ids[row, : len(ids)] = torch.as_tensor(ids)
        attention[row, : len(ids)] = 1
        if types is not None and type_ids is not None:
            types[row, : len(ids)] = torch.as_tensor(type_ids[i])
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
