"""A challenge in the closed loop (`bench/closed_loop.py`): users' interleaved searches, looked at by the
producer's own challenge duty, until it ends the challenge."""

from __future__ import annotations

from typing import Any

import numpy as np
from closed_loop_users import serve_round

from eduranker.serving import ChampionReranker
from eduranker.store import versions
from producer.challenge_refresh import refresh_challenge


def run_challenge(ctx: dict[str, Any], version: str) -> dict[str, Any]:
    """Serve while `version` is the challenger, `--look-every` searches a look; each look is the
    producer's own challenge duty (`refresh_challenge`), until it ends the challenge."""
    db, args, reranker, settings = ctx["db"], ctx["args"], ctx["reranker"], ctx["settings"]
    reranker.refresh()  # follows models/challenger now (its watcher would within a second)
    alone = ChampionReranker(settings.models_dir, base_model=settings.base_model_name, poll_seconds=3600,
                             max_length=args.max_length, device="cpu", challenge_share=0.0)  # fmt: skip
    shown: list[float] = []
    own: list[float] = []
    searches = 0
    try:
        while searches < args.challenge_searches:
            part = serve_round(db, ctx["world"], reranker, args, ctx["rng"], args.look_every, champion_alone=alone)
            shown += [n for n, interleaved in zip(part.shown_ndcg, part.was_interleaved, strict=True) if interleaved]
            own += part.alone_ndcg
            searches += args.look_every
            done = refresh_challenge(db, settings)
            if done is None or done.applied:
                break
    finally:
        alone.close()
    reranker.refresh()
    ended = versions.get_version(db, version).get("challenge") or {}
    return {
        "outcome": ended.get("outcome") or "running",
        "searches": searches,
        "figures": ended.get("figures") or {},
        "shown": float(np.mean(shown)) if shown else None,
        "alone": float(np.mean(own)) if own else None,
    }
