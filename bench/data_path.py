"""Feedback documents → training pairs: the streamed, batched join against one query per document.

    .venv/bin/python bench/data_path.py [--documents 100000] [--naive-sample 2000]

Starts SecantusDB on loopback (or uses MONGODB_URL), inserts `--documents` inferences with feedback over
2,000 queries and 5,000 resources (some malformed, so skipping is part of the work), then builds the
snapshot the worker builds, at a quarter, half and all of them to show how time grows. Beside it, in the
same run, the per-document way (fetch each inference's query and resource by id) on a sample, as a
per-row ratio. Prints seconds, rows/s and peak memory of each.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console.localservers import mongo_url, secantus_server  # noqa: E402
from eduranker.pipeline.pairs import build_snapshot, clean_text  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes  # noqa: E402
from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES  # noqa: E402
from eduranker.store.snapshot import iter_feedback_rows  # noqa: E402

WORDS = [
    "cell",
    "energy",
    "plant",
    "equation",
    "history",
    "river",
    "atom",
    "force",
    "poem",
    "code",
    "graph",
    "war",
    "map",
    "light",
    "sound",
]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def populate_texts(db, seed: int = 0) -> tuple[list, list]:
    rng = random.Random(seed)
    queries = db[USER_QUERIES].insert_many([{"query_text": text(rng, rng.randint(2, 8))} for _ in range(2000)])
    resources = db[RESOURCES].insert_many(
        [{"title": text(rng, 5), "description": text(rng, rng.randint(5, 120))} for _ in range(5000)]
    )
    return queries.inserted_ids, resources.inserted_ids


def add_feedback(db, qids: list, rids: list, first: int, count: int) -> None:
    rng = random.Random(first)
    start = datetime.now(UTC) - timedelta(days=30)
    batch = []
    for i in range(first, first + count):
        doc = {"query_id": rng.choice(qids), "resource_id": rng.choice(rids), "created_at": start,
               "feedback": rng.choice(("like", "dislike")), "feedback_at": start + timedelta(seconds=i)}  # fmt: skip
        if i % 97 == 0:  # about 1 % malformed, in a few shapes
            doc[rng.choice(("feedback", "query_id", "resource_id"))] = rng.choice((None, "oops", 3))
        batch.append(doc)
        if len(batch) == 10_000:
            db[INFERENCES].insert_many(batch)
            batch = []
    if batch:
        db[INFERENCES].insert_many(batch)


def naive(db, sample: int) -> int:
    """One query per inference for its query and one for its resource: the notebook's way."""
    pairs = 0
    for inf in db[INFERENCES].find({"feedback": {"$in": ["like", "dislike"]}}).limit(sample):
        query = db[USER_QUERIES].find_one({"_id": inf.get("query_id")})
        res = db[RESOURCES].find_one({"_id": inf.get("resource_id")})
        if query and res and isinstance(query.get("query_text"), str) and isinstance(res.get("title"), str):
            clean_text(query["query_text"]), clean_text(res["title"] + " " + str(res.get("description", "")))
            pairs += 1
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=2000)
    args = parser.parse_args()

    server = None
    url = os.environ.get("MONGODB_URL")
    if url is None:
        server = secantus_server(Path(tempfile.mkdtemp(prefix="data-path-"))).start()
        url = mongo_url(server.port)
    settings = Settings(mongodb_url=url, mongodb_db="data_path_bench")
    db = connect(settings)
    db.client.drop_database(settings.mongodb_db)
    ensure_indexes(db)
    try:
        qids, rids = populate_texts(db)
        per_row, present = {}, 0
        for n in (args.documents // 4, args.documents // 2, args.documents):
            began = time.perf_counter()
            add_feedback(db, qids, rids, present, n - present)
            present = n
            print(f"{n} feedback documents in the collection (inserted in {time.perf_counter() - began:.1f} s)",
                  flush=True)  # fmt: skip
            began = time.perf_counter()
            snap = build_snapshot(iter_feedback_rows(db, settings.max_text_chars), settings.max_text_chars)
            seconds = time.perf_counter() - began
            per_row[n] = seconds / n
            print(f"  snapshot: {seconds:6.2f} s  {n / seconds:8.0f} rows/s  pairs {len(snap.pairs)}  "
                  f"skipped {sum(snap.skipped.values())}", flush=True)  # fmt: skip
        # Memory in a pass of its own: tracing allocations slows Python down several times.
        tracemalloc.start()
        build_snapshot(iter_feedback_rows(db, settings.max_text_chars), settings.max_text_chars)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"Python heap peak while building the {args.documents}-document snapshot: {peak / 2**20:.0f} MB")
        smallest, largest = min(per_row), max(per_row)
        print(f"time per row at {largest} vs {smallest} documents: {per_row[largest] / per_row[smallest]:.2f}x "
              "(1.00 = linear)")  # fmt: skip

        began = time.perf_counter()
        naive(db, args.naive_sample)
        naive_per_row = (time.perf_counter() - began) / args.naive_sample
        print(f"per-document queries: {1 / naive_per_row:.0f} rows/s on {args.naive_sample}; the batched join is "
              f"{naive_per_row / per_row[largest]:.1f}x faster per row")  # fmt: skip
        print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        db.client.drop_database(settings.mongodb_db)
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
