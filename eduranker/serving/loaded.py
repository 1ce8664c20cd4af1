"""One loaded version: its model and tokenizer, checked on a probe pair before anyone is served by it.

A version may be served as one of its variants (`eduranker.variants`): int8 loads the file the worker
wrote beside the version; bf16 runs the fp32 weights under bf16 autocast; openvino and onnx run the
graph the worker exported. A version without the files of the asked variant (or a process without its
runtime) is served as the nearest variant it has (openvino as bf16, the others as fp32) and says so in
its `variant`.

`score_both` scores one request with two versions (an interleaved request): the texts tokenised once
where both read them alike, the two scorings run at once where the process has the cores."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eduranker.pipeline.encoding import QUERY_TOKENS, EncodedPairs, encode_query_documents
from eduranker.pipeline.model_io import load_cross_encoder, quiet_hub
from eduranker.pipeline.precision import cpu_has_native_bf16
from eduranker.pipeline.scoring import near_ties, score_encoded
from eduranker.pipeline.variant_io import load_int8, read_description
from eduranker.serving.graph import GraphRunner, runtime_available
from eduranker.variants import BF16, FP32, GRAPH_FILE, GRAPH_VARIANTS, INT8, ONNX, OPENVINO, variant_dir

log = logging.getLogger(__name__)

PROBE = ("how do plants make food", "Photosynthesis explained with diagrams")
# Characters of a query or document kept before tokenising, as training's MAX_TEXT_CHARS (4000): a
# megabyte of text costs no more than the model can read of it.
MAX_TEXT_CHARS = 4000
# A version served in bf16 rescores in fp32 the documents whose place in the first EXACT_TOP of a
# request's ranking rests on a score difference under TIE_GAP (bf16's scores differ from fp32's by up to
# 2.8e-4, mostly far less). bench/tie_gap.py, 60 held-out queries a text shape: 2e-4 rescored about 3 of
# 20 documents a request and gave fp32's NDCG@10 on short and mixed texts; 1e-4 missed on mixed ones.
TIE_GAP = 2e-4
EXACT_TOP = 10


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
    reads: str = ""  # how it turns text into tokens: two models with the same `reads` share an encoding
    exact: Any = None  # the same version in fp32, for near ties (None: `model` is exact already)
    tie_gap: float = TIE_GAP

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Scores aligned with `documents`: every text clipped to `max_text_chars` before tokenising,
        the query tokenised once for the whole request."""
        if not documents:
            return np.zeros(0)
        return self.score_encoded(self.encode(query, documents))

    def encode(self, query: str, documents: Sequence[str]) -> EncodedPairs:
        clip = self.max_text_chars
        return encode_query_documents(self.tokenizer, query[:clip], [d[:clip] for d in documents], self.max_length,
                                      query_tokens=self.query_tokens)  # fmt: skip

    def score_encoded(self, encoded: EncodedPairs) -> np.ndarray:
        amp = self.device.type == "cuda" or self.variant == BF16  # on CUDA as scoring does for the gate
        with _IN_FLIGHT, torch.inference_mode():
            with torch.autocast(self.device.type, enabled=amp, dtype=torch.bfloat16):
                scores = score_encoded(self.model, encoded, device=self.device, batch_size=self.batch_size)
            ties = near_ties(scores, self.tie_gap, EXACT_TOP) if self.exact is not None else None
            if ties is not None and ties.size:  # the top of the ranking as fp32 orders it
                scores[ties] = score_encoded(self.exact, encoded, device=self.device, batch_size=self.batch_size,
                                             indices=ties)  # fmt: skip
            return scores


class _Counter:
    """Scorings running in this process now (each request thread's, and the second of `score_both`)."""

    def __init__(self) -> None:
        self.value, self._lock = 0, threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.value += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.value -= 1


_IN_FLIGHT = _Counter()


def score_both(
    first: LoadedModel, second: LoadedModel, query: str, documents: Sequence[str], *, overlap: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both models' scores for one request, each aligned with `documents`. The texts are tokenised once
    where both models read them alike (same tokenizer, lengths and clipping); `overlap` runs the second
    scoring on a thread of its own meanwhile (None: where the process's cores are free for it,
    `overlap_pays`)."""
    if not documents:
        return np.zeros(0), np.zeros(0)
    encoded = first.encode(query, documents)
    other = encoded if first.reads and first.reads == second.reads else second.encode(query, documents)
    if overlap is None:
        overlap = overlap_pays(len(os.sched_getaffinity(0)), torch.get_num_threads(), _IN_FLIGHT.value)
    if not overlap:
        return first.score_encoded(encoded), second.score_encoded(other)
    found: list[np.ndarray] = []
    failed: list[BaseException] = []

    def run_second() -> None:
        try:
            found.append(second.score_encoded(other))
        except BaseException as exc:  # handed to the request's own thread below
            failed.append(exc)

    thread = threading.Thread(target=run_second, name="score-second", daemon=True)
    thread.start()
    try:
        mine = first.score_encoded(encoded)
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return mine, found[0]


def overlap_pays(cores: int, threads: int, in_flight: int) -> bool:
    """Whether a request's two scorings should run side by side: only where the process's cores hold the
    scorings already running (`in_flight`) and both of this request's, at `threads` each. Beyond that the
    threads only take turns on the cores, and the request waits for the slower of the two."""
    return (in_flight + 2) * max(threads, 1) <= cores


def reads_fingerprint(tokenizer: Any, max_length: int, max_text_chars: int, query_tokens: int | None) -> str:
    """What decides the encoding of a request: the tokenizer's whole definition and the cuts applied."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else f"object {id(tokenizer)}"  # slow: never shared
    digest = hashlib.sha256(definition.encode("utf-8"))
    digest.update(f"{type(tokenizer).__name__} {max_length} {max_text_chars} {query_tokens}".encode())
    return digest.hexdigest()


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
    model, tokenizer = _load_built_or_none(path, served)
    if model is None:  # fp32, bf16, or a built file that does not load: the version's own weights
        served = _servable(path, version, device, _FALLBACK[served]) if served in _FALLBACK else served
        model, tokenizer = load_cross_encoder(path, device, seed=0)
    model.eval()
    inputs = version_inputs(path, tokenizer, max_length)
    family = getattr(getattr(model, "config", None), "model_type", "unknown")  # as its config.json names it
    log.info("loading %s: %s, %s, max_length %d, query tokens %s, %s", version or "the base model", family,
             type(tokenizer).__name__, inputs.max_length, inputs.query_tokens, served)  # fmt: skip
    reads = reads_fingerprint(tokenizer, inputs.max_length, MAX_TEXT_CHARS, inputs.query_tokens)
    loaded = LoadedModel(version, model, tokenizer, device, inputs.max_length, batch_size, variant=served,
                         query_tokens=inputs.query_tokens, reads=reads,
                         exact=_exact(model, path, served, device))  # fmt: skip
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


def _exact(model: Any, path: str | Path, served: str, device: torch.device) -> Any:
    """What rescores near ties in fp32: the same weights without autocast for bf16, the graph compiled in
    fp32 for openvino where it runs in bf16; None where the scores are fp32's already (or on CUDA)."""
    if device.type != "cpu":
        return None
    if served == BF16:
        return model
    if isinstance(model, GraphRunner) and model.precision == "bf16":
        return GraphRunner(model.path, model.runtime, bf16=False, threads=model.threads)
    return None


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
    if variant not in _FALLBACK:
        return variant if variant == FP32 or device.type == "cpu" else FP32  # CUDA already runs bf16 autocast
    instead = _FALLBACK[variant]
    if device.type != "cpu" or version is None or read_description(path, variant) is None:
        log.warning("%s has no %s variant%s; serving it as %s", version or "the base model", variant,
                    "" if device.type == "cpu" else " for " + device.type, instead)  # fmt: skip
        return _servable(path, version, device, instead)
    if variant in GRAPH_VARIANTS and not runtime_available(variant):
        log.warning("%s is not installed; serving %s as %s", variant, version, instead)
        return _servable(path, version, device, instead)
    return variant


# What a version is served as where the asked variant's files (or runtime) are missing.
_FALLBACK = {INT8: FP32, OPENVINO: BF16, ONNX: FP32}


def _load_built_or_none(path: str | Path, variant: str) -> tuple[Any, Any]:
    """A built variant's (model, tokenizer); (None, None) for a variant run from the version's own weights
    or one whose files do not load (it is then served as its fallback)."""
    if variant == INT8:
        return _load_int8_or_none(path)
    if variant not in GRAPH_VARIANTS:
        return None, None
    try:
        from transformers import AutoTokenizer

        quiet_hub()
        runner = GraphRunner(variant_dir(path, variant) / GRAPH_FILE, variant, bf16=cpu_has_native_bf16())
        return runner, AutoTokenizer.from_pretrained(str(path))
    except Exception:
        log.exception("the %s variant of %s did not load; serving it as %s", variant, path, _FALLBACK[variant])
        return None, None


def _load_int8_or_none(path: str | Path) -> tuple[Any, Any]:
    """The int8 variant, or (None, None) where it does not load (torch's eager quantization is deprecated:
    a later torch may not read a file an older one wrote); the version is then served in fp32."""
    try:
        return load_int8(path)
    except Exception:
        log.exception("the int8 variant of %s did not load; serving it in fp32", path)
        return None, None
