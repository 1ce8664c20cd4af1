"""`eduranker serve`: the reranking endpoints under uvicorn, for a search API not written in Python.

One uvicorn worker process holding one `ChampionReranker`, and as many request threads scoring at once
as the process has cores, each with one torch thread: the rule measured for serving in
docs/performance.md (4 clients with one torch thread each served more requests per second than with
two; a second worker process would hold a second copy of the model and compete for the same cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from eduranker.api.app import create_app
from eduranker.api.router import Limits, ResourceLookup
from eduranker.serving import ChampionReranker
from eduranker.settings import Settings


def default_threads() -> int:
    """Request threads scoring at once: one per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def mongodb_resources(settings: Settings) -> ResourceLookup:
    """Texts of resources by id from MongoDB's `resources`, built as training builds a document's text
    (the cleaned title, a blank line, the cleaned description), so a version scores what it learnt from."""
    from eduranker.pipeline.pairs import clean_text
    from eduranker.store import connect
    from eduranker.store.resources import resource_fields

    db = connect(settings)

    def texts(ids: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        for doc in resource_fields(db, ids):
            title = clean_text(str(doc.get("title") or "")) if doc else ""
            description = clean_text(str(doc.get("description") or "")) if doc else ""
            out.append(None if not title else f"{title}\n\n{description}" if description else title)
        return out

    return texts


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    threads: int,
    poll_seconds: float,
    max_documents: int,
    resources: ResourceLookup | None = None,
) -> int:
    import torch
    import uvicorn

    torch.set_num_threads(1)  # one torch thread per request thread (docs/performance.md, the threads rule)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def load() -> ChampionReranker:
        return ChampionReranker(settings.models_root, base_model=settings.base_model_name, poll_seconds=poll_seconds,
                                max_length=settings.max_length, variant=settings.serving_variant,
                                index=settings.index)  # fmt: skip

    app = create_app(load, limits=Limits(max_documents=max_documents), resources=resources, threads=threads)
    uvicorn.run(app, host=host, port=port, workers=1, log_level="info", access_log=False)
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """`eduranker serve` with its parsed options."""
    if (args.threads is not None and args.threads < 1) or args.max_documents < 1 or args.poll_seconds <= 0:
        print("error: --threads, --max-documents and --poll-seconds must be positive", file=sys.stderr)
        return 2
    resources = mongodb_resources(settings) if args.resources_from_mongodb else None
    return serve(settings, host=args.host, port=args.port, threads=args.threads or default_threads(),
                 poll_seconds=args.poll_seconds, max_documents=args.max_documents, resources=resources)  # fmt: skip
