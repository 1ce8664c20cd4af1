"""Score (query, document) pairs with a cross-encoder: length-sorted batches, no autograd."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from eduranker.pipeline.encoding import collate, encode_pairs, sorted_batches

if TYPE_CHECKING:  # types only: importing transformers costs seconds
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def score_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    device: torch.device,
    max_length: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Probabilities in [0, 1] (sigmoid of the ranking logit), in the order of the inputs."""
    if not queries:
        return np.zeros(0)
    encoded = encode_pairs(tokenizer, queries, documents, max_length)
    scores = np.empty(len(encoded), dtype=np.float64)
    was_training = model.training
    model.train(False)
    use_amp = device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp, dtype=torch.bfloat16):
        for indices in sorted_batches(encoded.lengths, batch_size):
            batch = {k: v.to(device, non_blocking=True) for k, v in collate(encoded, indices).items()}
            logits = model(**batch).logits.view(-1).float()
            scores[indices] = torch.sigmoid(logits).cpu().numpy()
    model.train(was_training)
    return scores
