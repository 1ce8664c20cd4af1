"""What the reranking endpoints take and return (OpenAPI at /docs is generated from these)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RerankRequest(BaseModel):
    query: str = Field(description="the user's query, as typed")
    documents: list[str] | None = Field(None, description="the candidates' texts (or give resource_ids)")
    resource_ids: list[str] | None = Field(None, description="the candidates' ids, where the API was given a lookup")
    key: str | None = Field(None, description="the user's id: a stable holdback share of users, per user")


class Position(BaseModel):
    """One result as served: what to write on its `inferences` document."""

    rank: int = Field(description="1 for the first result")
    index: int = Field(description="the document's index in the request")
    resource_id: str | None = Field(None, description="the resource's id, where the request gave ids")
    score: float
    model_version: str | None = Field(description="the version that ranked it (None: the base model)")


class RerankResponse(BaseModel):
    version: str | None = Field(description="the version that scored this request (None: the base model)")
    order: list[int] = Field(description="document indices, best first")
    scores: list[float] = Field(description="aligned with the documents given")
    positions: list[Position] = Field(description="one per result, best first: the fields of each inference")
    holdback: bool = Field(description="served by the previous champion, for the live comparison")
    interleaved: bool = Field(description="a team-draft interleaving of the champion's and the previous champion's")


class ModelInfo(BaseModel):
    version: str | None = Field(description="the version serving (None: the base model)")
    serving_since: str | None = Field(description="when this process first served it (UTC, ISO 8601)")
    variant: str = Field(description="SERVING_VARIANT asked for (a version without its files serves fp32)")
    base_model: str | None
    models_dir: str
    compare: str | None = Field(description="'holdback', 'interleave' or None: how the previous champion is served")
    share: float = Field(description="the share of users (holdback) or requests (interleave) it gets")
    last_error: str | None = Field(description="why the newest champion pointer target is not serving")
    metrics: dict[str, Any] | None = Field(description="held-out metrics before and after its training")
    gate: dict[str, Any] | None = Field(description="the gate's evidence: gain, interval, pairs, queries, slices")
    gate_reason: str | None
    job_id: str | None = Field(description="the training job that made it")
    challenge: dict[str, Any] | None = Field(
        None,
        description="while a challenge runs, the challenger interleaved with it: version, share, gate reason, job",
    )
