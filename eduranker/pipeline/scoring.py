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
    model: PreTrainedModel, encoded: EncodedPairs, *, device: torch.device, batch_size: int
) -> np.ndarray:
    """Probabilities for pairs already tokenised, in their order; the caller sets inference mode."""
    scores = np.empty(len(encoded), dtype=np.float64)
    for indices in sorted_batches(encoded.lengths, batch_size):
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(encoded, indices).items()}
        logits = model(**batch).logits.view(-1).float()
        scores[indices] = torch.sigmoid(logits).cpu().numpy()
    return scores
