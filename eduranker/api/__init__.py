"""The reranking endpoints over HTTP: a FastAPI router the search API mounts, backed by one
`ChampionReranker` (`pip install "eduranker-trainer[serving,api]"`; no Celery, no database client).

    from fastapi import FastAPI
    from eduranker.api import reranking_router
    from eduranker.serving import ChampionReranker

    app = FastAPI()
    app.include_router(reranking_router(ChampionReranker("models")))  # /api/reranking/...

`eduranker serve` runs the same router under uvicorn for a search API not written in Python.
"""

from eduranker.api.router import Limits, reranking_router

__all__ = ["Limits", "reranking_router"]
