"""One loaded version: its model and tokenizer, checked on a probe pair before anyone is served by it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eduranker.pipeline.encoding import encode_query_documents
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.scoring import score_encoded

PROBE = ("how do plants make food", "Photosynthesis explained with diagrams")
# Characters of a query or document kept before tokenising, as training's MAX_TEXT_CHARS (4000): a
# megabyte of text costs no more than the model can read of it.
MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class LoadedModel:
    version: str | None  # None: the base model
    model: Any
    tokenizer: Any
    device: torch.device
    max_length: int
    batch_size: int
    max_text_chars: int = MAX_TEXT_CHARS

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Scores aligned with `documents`: every text clipped to `max_text_chars` before tokenising,
        the query tokenised once for the whole request."""
        if not documents:
            return np.zeros(0)
        clip = self.max_text_chars
        encoded = encode_query_documents(self.tokenizer, query[:clip], [d[:clip] for d in documents], self.max_length)
        amp = self.device.type == "cuda"  # as scoring does for the gate
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=amp, dtype=torch.bfloat16):
            return score_encoded(self.model, encoded, device=self.device, batch_size=self.batch_size)


def load_checked(
    path: str | Path, version: str | None, device: torch.device, max_length: int, batch_size: int
) -> LoadedModel:
    """Load a version and score the probe pair; raise if it does not load or scores nonsense."""
    model, tokenizer = load_cross_encoder(path, device, seed=0)
    model.eval()
    loaded = LoadedModel(version, model, tokenizer, device, max_length, batch_size)
    probe = float(loaded.score(PROBE[0], [PROBE[1]])[0])
    if not math.isfinite(probe) or not 0.0 <= probe <= 1.0:
        raise ValueError(f"probe pair scored {probe!r}")
    return loaded
