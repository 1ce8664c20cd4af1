"""What the producer's live-metrics refresh costs as `inferences` grows.

    .venv/bin/python bench/online_refresh.py [--total 1000000] [--window 20000]
    .venv/bin/python bench/online_refresh.py --since-promotion 100000,1000000 [--changes 1000]

`--since-promotion`: `N` results served since the promotion (searches of four results, interleaved or
held back, a third of the results with a reaction, from 5,000 users). For each `N` it times, side by
side in one run, the guard's comparison read in full from the promotion (what every refresh did
before the running sums) and a refresh of the running sums after `--changes` reactions changed (set,
flipped or removed), plus the first refresh that builds the sums.

Starts SecantusDB on loopback (or uses MONGODB_URL), promotes a champion, then grows `inferences` in
steps up to `--total` documents: old versions' results from before the promotion, plus `--window`
results of the champion and its holdback since the promotion (most with feedback). After each step it
times `refresh_online` (the indexed counts the producer runs once a minute) and, beside it, the same
figures from one aggregation that reads every inference (what a refresh without the indexes costs).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bson import ObjectId  # noqa: E402

from console.localservers import mongo_url, secantus_server  # noqa: E402
from eduranker import champion  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, versions  # noqa: E402
from eduranker.store.connection import INFERENCES  # noqa: E402
from eduranker.store.online import ensure_online_indexes  # noqa: E402
from producer.online_refresh import refresh_online  # noqa: E402
from tests.fake_versions import make_version  # noqa: E402


def insert(db, n: int, version: str | None, at: datetime, rng: random.Random) -> None:
    for start in range(0, n, 10_000):
        docs = []
        for _ in range(min(10_000, n - start)):
            doc = {"query_id": ObjectId(), "resource_id": ObjectId(), "model_version": version, "created_at": at}
            if rng.random() < 0.3:
                doc["feedback"] = "like" if rng.random() < 0.6 else "dislike"
            docs.append(doc)
        db[INFERENCES].insert_many(docs, ordered=False)


def timed(fn, repeat: int = 3) -> float:
    began = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - began) / repeat


def full_scan(db) -> list:
    return list(
        db[INFERENCES].aggregate([{"$group": {"_id": {"v": "$model_version", "f": "$feedback"}, "n": {"$sum": 1}}}])
    )


def serve_since(db, n: int, since: datetime, rng: random.Random, users: int = 5000) -> list:
    """`n` results in searches of four since `since`; returns the ids of a sample of results."""
    shapes = [["v0002", "v0001", "v0001", "v0002"]] * 4 + [["v0002"] * 4] * 3 + [["v0001"] * 4]
    sample, at = [], since + timedelta(seconds=1)
    for start in range(0, n, 20_000):
        queries, results = [], []
        for _ in range(min(20_000, n - start) // 4):
            query = {"_id": ObjectId(), "query_text": "q", "created_at": at, "user_id": f"u{rng.randrange(users)}"}
            queries.append(query)
            for rank, version in enumerate(rng.choice(shapes), start=1):
                doc = {"_id": ObjectId(), "query_id": query["_id"], "resource_id": ObjectId(), "rank": rank,
                       "model_version": version, "created_at": at}  # fmt: skip
                if rng.random() < 0.33:
                    doc.update(feedback="like" if rng.random() < 0.6 else "dislike", feedback_at=at)
                results.append(doc)
        db.user_queries.insert_many(queries, ordered=False)
        db[INFERENCES].insert_many(results, ordered=False)
        sample += [doc["_id"] for doc in rng.sample(results, min(len(results), 2000))]
    return sample


def change(db, sample: list, k: int, rng: random.Random) -> None:
    for inference in rng.sample(sample, k):
        roll = rng.random()
        if roll < 0.8:
            db[INFERENCES].update_one({"_id": inference}, {"$set": {"feedback": rng.choice(["like", "dislike"])}})
        else:
            db[INFERENCES].update_one({"_id": inference}, {"$unset": {"feedback": ""}})


def since_promotion(db, settings: Settings, sizes: list[int], changes: int) -> None:
    from eduranker.store.online import impressions, live_counts
    from producer.guard import compare
    from producer.online_refresh import impression_of

    print(f"refresh with N results since the promotion; the running sums after {changes} changed reactions")
    print(f"{'results':>10}{'full read s':>13}{'build s':>10}{'incremental s':>15}{'idle s':>9}{'full/incr':>11}")
    rng, served = random.Random(1), 0
    promoted = versions.get_version(db, "v0002")["promoted_at"]
    sample: list = []
    for n in sizes:
        sample += serve_since(db, n - served, promoted, rng)
        served = n
        began = time.perf_counter()
        compare([impression_of(r) for r in impressions(db, ["v0002", "v0001"], promoted)], "v0002", "v0001")
        live_counts(db, "v0002", promoted), live_counts(db, "v0001", promoted)
        full = time.perf_counter() - began
        db.online_comparisons.delete_many({})  # the first refresh after this builds the sums from the promotion
        build = timed(lambda: refresh_online(db, settings), repeat=1)
        change(db, sample, changes, rng)
        incremental = timed(lambda: refresh_online(db, settings), repeat=1)
        idle = timed(lambda: refresh_online(db, settings), repeat=1)
        print(f"{n:>10,}{full:>13.2f}{build:>10.2f}{incremental:>15.2f}{idle:>9.2f}{full / incremental:>11.1f}",
              flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--since-promotion", default=None, help="sizes, e.g. 100000,1000000")
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="online-bench-"))
    server = None
    url = os.environ.get("MONGODB_URL")
    if url is None:
        server = secantus_server(tmp / "db").start()
        url = mongo_url(server.port)
    settings = Settings(mongodb_url=url, mongodb_db="online_bench", models_dir=str(tmp / "models"))
    db = connect(settings)
    db.client.drop_database(settings.mongodb_db)
    ensure_indexes(db)
    ensure_online_indexes(db)
    for v in ("v0001", "v0002"):
        make_version(settings.models_dir, v)
        versions.insert_version(db, {"version": v, "job_id": v})
    champion.promote(db, settings.models_dir, "v0001", by="bench", reason="bench")
    champion.promote(db, settings.models_dir, "v0002", by="bench", reason="bench")
    if args.since_promotion:
        since_promotion(db, settings, [int(x) for x in args.since_promotion.split(",")], args.changes)
        db.client.drop_database(settings.mongodb_db)
        if server is not None:
            server.stop()
        return 0
    promoted = versions.get_version(db, "v0002")["promoted_at"]
    rng = random.Random(0)
    insert(db, int(args.window * 0.95), "v0002", promoted + timedelta(seconds=1), rng)
    insert(db, args.window - int(args.window * 0.95), "v0001", promoted + timedelta(seconds=1), rng)
    print(f"champion window: {args.window} results since the promotion (95% champion, 5% holdback)")
    print(f"{'inferences':>11}{'refresh (indexed) ms':>22}{'full aggregation ms':>21}{'ratio':>8}")
    size = args.window
    for target in sorted({args.total // 10, args.total // 4, args.total}):
        insert(db, target - size, rng.choice(["v0001", None]), promoted - timedelta(days=30), rng)
        size = target
        indexed = timed(lambda: refresh_online(db, settings))
        scan = timed(lambda: full_scan(db), repeat=1)
        print(f"{size:>11,}{indexed * 1000:>22.1f}{scan * 1000:>21.1f}{scan / indexed:>8.1f}", flush=True)
    db.client.drop_database(settings.mongodb_db)
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
