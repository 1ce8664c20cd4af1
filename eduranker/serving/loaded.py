"""One loaded version: its model and tokenizer, checked on a probe pair before anyone is served by it.

A version may be served as one of its variants (`eduranker.variants`): int8 loads the file the worker
wrote beside the version; bf16 runs the fp32 weights under bf16 autocast. A version without the files
of the asked variant is served in fp32 (and says so in its `variant`)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eduranker.pipeline.encoding import QUERY_TOKENS, encode_query_documents
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.precision import cpu_has_native_bf16
from eduranker.pipeline.scoring import score_encoded
from eduranker.pipeline.variants import load_int8, read_description
from eduranker.variants import BF16, FP32, INT8

log = logging.getLogger(__name__)

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
    variant: str = FP32  # what actually serves: fp32 where the asked variant's files are missing
    query_tokens: int | None = QUERY_TOKENS  # as the version was trained (None: no cut)

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Scores aligned with `documents`: every text clipped to `max_text_chars` before tokenising,
        the query tokenised once for the whole request."""
        if not documents:
            return np.zeros(0)
        clip = self.max_text_chars
        encoded = encode_query_documents(self.tokenizer, query[:clip], [d[:clip] for d in documents], self.max_length,
                                         query_tokens=self.query_tokens)  # fmt: skip
        amp = self.device.type == "cuda" or self.variant == BF16  # on CUDA as scoring does for the gate
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=amp, dtype=torch.bfloat16):
            return score_encoded(self.model, encoded, device=self.device, batch_size=self.batch_size)


def load_checked(
    path: str | Path,
    version: str | None,
    device: torch.device,
    max_length: int,
    batch_size: int,
    variant: str = FP32,
) -> LoadedModel:
    """Load a version (as `variant` where it has it) and score the probe pair; raise if it does not load
    or scores nonsense. What the version needs is read from its folder (`version_inputs`): its model
    family and tokenizer (its config and tokenizer files), its `max_length` and query budget (its
    metadata); `max_length` here is for a model that records none (the base model)."""
    served = _servable(path, version, device, variant)
    model, tokenizer = _load_int8_or_none(path) if served == INT8 else (None, None)
    if model is None:  # fp32, bf16, or an int8 file this torch cannot read: the version's own weights
        served = FP32 if served == INT8 else served
        model, tokenizer = load_cross_encoder(path, device, seed=0)
    model.eval()
    inputs = version_inputs(path, tokenizer, max_length)
    family = getattr(getattr(model, "config", None), "model_type", "unknown")  # as its config.json names it
    log.info("loading %s: %s, %s, max_length %d, query tokens %s, %s", version or "the base model", family,
             type(tokenizer).__name__, inputs.max_length, inputs.query_tokens, served)  # fmt: skip
    loaded = LoadedModel(version, model, tokenizer, device, inputs.max_length, batch_size, variant=served,
                         query_tokens=inputs.query_tokens)  # fmt: skip
    probe = float(loaded.score(PROBE[0], [PROBE[1]])[0])
    if not math.isfinite(probe) or not 0.0 <= probe <= 1.0:
        raise ValueError(f"probe pair scored {probe!r}")
    return loaded


@dataclass(frozen=True)
class VersionInputs:
    """How a version's inputs are built, as it was trained."""

    max_length: int  # tokens of a (query, document) pair
    query_tokens: int | None  # the query's budget within them (None: no cut)


def version_inputs(path: str | Path, tokenizer: Any, default_max_length: int) -> VersionInputs:
    """A version's `max_length` and query budget from its metadata (`hyperparameters`); a model without
    our metadata (the base model) gets `default_max_length` and the current budget. Either is capped at
    what its tokenizer declares it can read (`model_max_length`, written by the worker as the version's
    `max_length`; 512 for most hub cross-encoders)."""
    hyper = _metadata(path).get("hyperparameters") or {}
    recorded = hyper.get("max_length")
    max_length = recorded if isinstance(recorded, int) and recorded > 0 else default_max_length
    readable = getattr(tokenizer, "model_max_length", None)
    if isinstance(readable, int) and 0 < readable < 1_000_000:  # transformers' "no limit" is a huge number
        max_length = min(max_length, readable)
    return VersionInputs(max_length, trained_query_tokens(path))


def _metadata(path: str | Path) -> dict[str, Any]:
    meta = Path(path) / "training_metadata.json"
    if not meta.is_file():
        return {}
    loaded = json.loads(meta.read_text())
    return loaded if isinstance(loaded, dict) else {}


def trained_query_tokens(path: str | Path) -> int | None:
    """The query tokens a version was trained with (`hyperparameters.query_tokens` in its metadata), so
    it is served the inputs it learnt from: None (no cut) for a version from before the budget, the
    budget for a model without our metadata (the base model)."""
    if not (Path(path) / "training_metadata.json").is_file():
        return QUERY_TOKENS
    tokens = (_metadata(path).get("hyperparameters") or {}).get("query_tokens")
    return int(tokens) if isinstance(tokens, int) else None


def _servable(path: str | Path, version: str | None, device: torch.device, variant: str) -> str:
    """The variant a version can be served as: the asked one where its files exist (int8: on a CPU)."""
    if variant == BF16 and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 (avx512_bf16, amx_bf16): serving %s in fp32", version or "base")
        return FP32
    if variant != INT8:
        return variant if variant == FP32 or device.type == "cpu" else FP32  # CUDA already runs bf16 autocast
    if device.type != "cpu" or version is None or read_description(path, INT8) is None:
        log.warning("%s has no int8 variant%s; serving it in fp32", version or "the base model",
                    "" if device.type == "cpu" else " for " + device.type)  # fmt: skip
        return FP32
    return INT8


def _load_int8_or_none(path: str | Path) -> tuple[Any, Any]:
    """The int8 variant, or (None, None) where it does not load (torch's eager quantization is deprecated:
    a later torch may not read a file an older one wrote); the version is then served in fp32."""
    try:
        return load_int8(path)
    except Exception:
        log.exception("the int8 variant of %s did not load; serving it in fp32", path)
        return None, None
