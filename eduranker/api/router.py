"""`reranking_router(ranker)`: the FastAPI router a search API mounts with `app.include_router(...)`.

- `GET /api/reranking/info-modele`: the version serving, its metrics and gate evidence, since when it
  serves here, the variant, the live comparison (`model_info.py`).
- `POST /api/reranking/rerank`: a query and its candidates (texts, or resource ids where the API gave a
  lookup), the user's key → the order, the scores, and per position the fields to write on that
  result's `inferences` document (rank, score, model_version).

Bad input is refused with 422 and a reason before any model runs: an empty query, no candidates or
both kinds, more than `Limits.max_documents`, a text longer than `Limits.max_text_chars` (the clip the
model reads; a longer text would be scored on its beginning only), an unknown resource id.
Scoring runs in worker threads, at most `threads` at once (one torch thread each: the threads rule in
docs/performance.md), so the event loop keeps answering /info-modele and the health checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, HTTPException

from eduranker.api.model_info import ServingInfo
from eduranker.api.schemas import ModelInfo, Position, RerankRequest, RerankResponse
from eduranker.serving import ChampionReranker, RerankResult
from eduranker.serving.loaded import MAX_TEXT_CHARS

PREFIX = "/api/reranking"
# Texts of resources by id, aligned with the ids (None for an id it does not know): the search API's own.
ResourceLookup = Callable[[Sequence[str]], Sequence[str | None]]


@dataclass(frozen=True)
class Limits:
    max_documents: int = 100  # candidates in one request: each costs a forward pass
    max_text_chars: int = MAX_TEXT_CHARS  # the clip LoadedModel.score applies to a query and each document


def problem_of(request: RerankRequest, limits: Limits) -> str | None:
    """Why the request cannot be served as asked, or None."""
    if not request.query.strip():
        return "the query is empty"
    if (request.documents is None) == (request.resource_ids is None):
        return "give either documents or resource_ids"
    candidates: list[str] = request.documents if request.documents is not None else request.resource_ids or []
    if len(candidates) > limits.max_documents:
        return f"{len(candidates)} documents: at most {limits.max_documents} per request"
    if len(request.query) > limits.max_text_chars:
        return f"the query has {len(request.query)} characters: at most {limits.max_text_chars}"
    for i, text in enumerate(request.documents or ()):
        if len(text) > limits.max_text_chars:
            return f"document {i} has {len(text)} characters: at most {limits.max_text_chars}"
    return None


def positions(result: RerankResult, resource_ids: Sequence[str] | None) -> list[Position]:
    """One row per served result, best first: what the search API writes on each inference (the
    reranker's own `inference_fields()`, with the document's index and resource id)."""
    return [
        Position(index=index, resource_id=resource_ids[index] if resource_ids else None, **fields)  # type: ignore[arg-type]
        for index, fields in zip(result.order, result.inference_fields(), strict=True)
    ]


def reranking_router(
    ranker: ChampionReranker,
    *,
    limits: Limits | None = None,
    resources: ResourceLookup | None = None,
    threads: int = 1,
) -> APIRouter:
    """The two endpoints over `ranker` (one per process: it follows `MODELS_DIR/champion` itself)."""
    limits = limits or Limits()
    info = ServingInfo(ranker)
    router = APIRouter(prefix=PREFIX, tags=["reranking"])
    limiter: list[anyio.CapacityLimiter] = []  # made on first use, inside the server's event loop

    @router.get("/info-modele", response_model=ModelInfo)
    def model_info() -> dict[str, Any]:
        return info.describe()

    @router.post("/rerank", response_model=RerankResponse, responses={422: {"description": "a reason"}})
    async def rerank(request: RerankRequest) -> RerankResponse:
        problem = problem_of(request, limits)
        if problem:
            raise HTTPException(status_code=422, detail=problem)
        documents = request.documents
        if documents is None:
            documents = _resolve(resources, request.resource_ids or [], limits)
        if not limiter:
            limiter.append(anyio.CapacityLimiter(threads))
        result = await anyio.to_thread.run_sync(
            lambda: ranker.rerank(request.query, documents, key=request.key), limiter=limiter[0]
        )
        info.observe(result.version)
        return RerankResponse(version=result.version, order=result.order, scores=result.scores,
                              positions=positions(result, request.resource_ids), holdback=result.holdback,
                              interleaved=result.interleaved)  # fmt: skip

    return router


def _resolve(resources: ResourceLookup | None, ids: Sequence[str], limits: Limits) -> list[str]:
    if resources is None:
        raise HTTPException(status_code=422, detail="this API has no resource lookup: send documents")
    texts = list(resources(ids))
    unknown = [i for i, text in zip(ids, texts, strict=True) if text is None]
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown resource ids: {', '.join(unknown[:10])}")
    return [text[: limits.max_text_chars] for text in texts if text is not None]
