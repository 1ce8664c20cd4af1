"""Interleaved searches written as the search API writes them, for the challenge's tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bson import ObjectId

from eduranker.store.connection import INFERENCES, USER_QUERIES


def write_interleaved(
    db,
    champion: str | None,
    challenger: str,
    *,
    users: int,
    per_user: int = 2,
    p_challenger: float,
    p_champion: float,
    seed: int = 0,
    anonymous: bool = False,
) -> int:
    """Searches whose lists interleave both versions (two results each), every result reacted to:
    liked with its version's probability, else disliked. Returns the searches written."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    queries, results = [], []
    for u in range(users):
        for _ in range(per_user):
            qid = ObjectId()
            query = {"_id": qid, "query_text": f"q{u}", "created_at": now}
            if not anonymous:
                query["user_id"] = f"u{seed}-{u}"
            queries.append(query)
            for rank, (version, p) in enumerate(((champion, p_champion), (challenger, p_challenger)), start=1):
                feedback = "like" if rng.random() < p else "dislike"
                results.append({"query_id": qid, "resource_id": ObjectId(), "rank": rank, "score": 0.0,
                                "model_version": version, "created_at": now, "feedback": feedback,
                                "feedback_at": now})  # fmt: skip
    db[USER_QUERIES].insert_many(queries)
    db[INFERENCES].insert_many(results)
    return len(queries)
