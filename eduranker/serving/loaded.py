"""One loaded version: its model and tokenizer, checked on a probe pair before anyone is served by it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.scoring import score_pairs

PROBE = ("how do plants make food", "Photosynthesis explained with diagrams")


@dataclass(frozen=True)
class LoadedModel:
    version: str | None  # None: the base model
    model: Any
    tokenizer: Any
    device: torch.device
    max_length: int
    batch_size: int

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return score_pairs(self.model, self.tokenizer, [query] * len(documents), list(documents),
                           device=self.device, max_length=self.max_length, batch_size=self.batch_size)  # fmt: skip


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
