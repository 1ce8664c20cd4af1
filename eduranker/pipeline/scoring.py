"""Score (query, document) pairs with a cross-encoder: length-sorted batches, no autograd."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from eduranker.pipeline.encoding import EncodedPairs, collate, encode_pairs, sorted_batches

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Pairs tokenised and length-sorted together; large enough that sorting still removes most padding.
SCORE_CHUNK = 4096


def score_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    device: torch.device,
    max_length: int,
    batch_size: int = 64,
    chunk: int = SCORE_CHUNK,
) -> np.ndarray:
    """Probabilities in [0, 1] (sigmoid of the ranking logit), in the order of the inputs."""
    scores = np.empty(len(queries), dtype=np.float64)
    was_training = model.training
    model.train(False)
    use_amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp, dtype=torch.bfloat16):
        # A chunk at a time: memory holds one chunk's tokens, however many pairs there are.
        for begin in range(0, len(queries), chunk):
            end = min(begin + chunk, len(queries))
            encoded = encode_pairs(tokenizer, queries[begin:end], documents[begin:end], max_length)
            scores[begin:end] = score_encoded(model, encoded, device=device, batch_size=batch_size)
    model.train(was_training)
    return scores


def score_encoded(
    model: PreTrainedModel,
    encoded: EncodedPairs,
    *,
    device: torch.device,
    batch_size: int,
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities for pairs already tokenised, in their order (only the pairs at `indices`, in that
    order, where given); the caller sets inference mode."""
    rows = np.arange(len(encoded)) if indices is None else np.asarray(indices, dtype=np.int64)
    scores = np.empty(rows.size, dtype=np.float64)
    for batch_rows in sorted_batches(encoded.lengths[rows], batch_size):
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(encoded, rows[batch_rows]).items()}
        logits = model(**batch).logits.view(-1).float()
        scores[batch_rows] = torch.sigmoid(logits).cpu().numpy()
    return scores


def near_ties(scores: np.ndarray, gap: float, top: int) -> np.ndarray:
    """Indices (ascending) of the documents whose place in the first `top` of the ranking, or just below
    it, rests on a score difference under `gap`: scores computed in a low precision, each off by less
    than gap / 2, could have swapped them; scored exactly, they rank as the exact model ranks them."""
    order = np.argsort(-scores, kind="stable")[: top + 1]
    close = np.abs(np.diff(scores[order])) < gap  # neighbours in the ranking
    marked = np.zeros(order.size, dtype=bool)
    marked[:-1] |= close
    marked[1:] |= close
    return np.sort(order[marked])
