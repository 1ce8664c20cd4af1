"""The app `eduranker serve` runs: the reranking router, `/healthz` and `/readyz`, OpenAPI at `/docs`.

The port opens at once: the model loads in a thread, `/healthz` answers 200 while it does (the process
is alive) and `/readyz` 503 until the router is mounted (then 200 with the version serving), so an
orchestrator sends traffic only to a process that can rerank.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from eduranker.api.router import Limits, ResourceLookup, reranking_router
from eduranker.serving import ChampionReranker

log = logging.getLogger(__name__)


class _Loading:
    def __init__(self) -> None:
        self.ranker: ChampionReranker | None = None
        self.error: str | None = None


def create_app(
    load: Callable[[], ChampionReranker],
    *,
    limits: Limits | None = None,
    resources: ResourceLookup | None = None,
    threads: int = 1,
) -> FastAPI:
    """An app whose router is mounted once `load()` returns (in a thread, so the health checks answer)."""
    state = _Loading()

    def load_and_mount() -> None:
        try:
            ranker = load()
        except Exception as exc:  # reported by /readyz and the log; the process stays up to say so
            state.error = f"{type(exc).__name__}: {exc}"
            log.error("the reranker did not load: %s", state.error)
            return
        app.include_router(reranking_router(ranker, limits=limits, resources=resources, threads=threads))
        app.openapi_schema = None  # /docs shows the endpoints mounted now
        state.ranker = ranker
        log.info("reranking with %s", ranker.version or "the base model")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load_and_mount, name="load-reranker", daemon=True).start()
        yield
        if state.ranker is not None:
            state.ranker.close()

    app = FastAPI(title="EduRanker reranking", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", response_model=None)
    def readyz() -> Any:
        if state.ranker is None:
            body = {"status": "failed" if state.error else "loading", "error": state.error}
            return JSONResponse(body, status_code=503)
        return {"status": "ready", "version": state.ranker.version}

    return app
