"""The loop measured end to end: serve → position-biased feedback → job → gate, round after round.

    .venv/bin/python bench/closed_loop.py [--rounds 5] [--searches 250] [--warm-start] [--explore 0.1]
                                          [--seed 0] [--split-key HEX] [--no-oracle]
                                          [--train-max-pairs N] [--sampling newest|recency]
                                          [--corpus en|fr] [--promotion interleave|offline]
                                          [--look-every 25] [--challenge-searches 4000]
                                          [--out rows.json] [--no-memo]

Real services: SecantusDB and redis-server on loopback, a real Celery worker (`-c 1`) running each job,
and `ChampionReranker` serving (it follows each promotion). The corpus is real human-written text:
Debian package descriptions (`bench/packages_corpus.py`): a package's summary is the query, its long
description the relevant document, same-section packages the hard negatives among its candidates
(10 by default). 150 queries are test queries, never served: each model's TRUE NDCG@10 and MRR are
measured on them (`bench/closed_loop_truth.py`). Simulated users (seeded, `bench/closed_loop_users.py`)
examine rank r with probability (1/r)^eta, like the relevant result when they examine it (95%), dislike
half of the non-relevant results they examine, and 2% of reactions are flipped. Per round it prints the
feedback and its share at ranks 1-3, the job's outcome with the gate's interval, the champion's and
candidate's true quality, two leakage counts measured independently of the gate (held-out queries the
judged champion trained on, reference queries the candidate trained on) and the share of searched (and
held-out) queries whose relevant document no user has judged yet. At the end: each Done-when goal of
issue 18, met or not, and an oracle (the same system trained on as many uniformly sampled true labels).
SPLIT_KEY is derived from --seed (or given), so that two arms of a comparison hold out the same queries.
--train-max-pairs sets TRAIN_MAX_PAIRS; --sampling recency runs the worker of `bench/sampling_worker.py`,
which trains on a recency-weighted sample of that many pairs instead of the newest ones.
--corpus fr runs on Debian's French package descriptions (`bench/french_corpus.py`) instead.
A version scores a repeated search once (`bench/score_memo.py`: the same scores, read back); --no-memo
scores every search anew.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from closed_loop_challenge import run_challenge  # noqa: E402
from closed_loop_report import goals, print_row  # noqa: E402
from closed_loop_truth import TrueQuality, feedback_queries, leakage, oracle, source_of  # noqa: E402
from closed_loop_users import insert_resources, make_world, serve_round  # noqa: E402
from packages_corpus import SHIPPED, load_shipped  # noqa: E402
from score_memo import ScoreMemo  # noqa: E402

from console.cluster import child_env, default_base_model  # noqa: E402
from console.localservers import mongo_url, redis_server, secantus_server  # noqa: E402
from eduranker.pipeline.pairs import query_key  # noqa: E402
from eduranker.pipeline.split import SplitKey, is_heldout  # noqa: E402
from eduranker.queue import make_celery, send_training_job  # noqa: E402
from eduranker.serving import ChampionReranker  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs, versions  # noqa: E402
from eduranker.store.connection import INFERENCES  # noqa: E402
from eduranker.store.evaluation_epochs import latest_epoch  # noqa: E402

# The shipped corpora: English (bench/packages_corpus.py) and French (bench/french_corpus.py).
CORPORA = {"en": SHIPPED, "fr": SHIPPED.with_name("debian_packages_fr.jsonl.gz")}


def wait_for(db: Any, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = jobs.get_job(db, job_id) or {}
        if job.get("status") in jobs.TERMINAL:
            return job
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish in {timeout_s:.0f} s")


def run_round(r: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """One round: serve, react, one job, its outcome against the truth; a challenge decided by users."""
    db, world, args, models_dir, base = ctx["db"], ctx["world"], ctx["args"], ctx["models_dir"], ctx["base"]
    reranker, quality, trained = ctx["reranker"], ctx["quality"], ctx["trained"]
    served = serve_round(db, world, reranker, args, ctx["rng"])
    reactions, ranks = served.reactions, served.ranks
    top3 = sum(1 for rank in ranks if rank <= 3) / max(1, len(ranks))
    snapshot_queries = feedback_queries(db)
    champion = reranker.version  # what served this round, and what the job judges against (read before a
    # promotion by this round's job moves the reranker on)
    job_id = f"round-{r}"
    jobs.create_job(db, job_id, trigger={"reason": f"closed-loop round {r}"})
    send_training_job(ctx["app"], job_id)
    job = wait_for(db, job_id)
    epoch = latest_epoch(db)
    key = SplitKey(epoch.epoch, epoch.key, epoch.test_fraction) if epoch else None
    row: dict[str, Any] = {
        "round": r,
        "reactions": reactions,
        "top3": top3,
        "status": job["status"],
        "reason": job.get("reason") or job.get("gate_reason"),
        "champion": champion,
    }
    if key is not None:
        heldout = {n for n in world.searched if is_heldout(query_key(world.summary[n]), key)}
        row["never_judged"] = tuple(
            (len(group - world.relevant_judged) / max(1, len(group)), len(group)) for group in (world.searched, heldout)
        )
    version = job.get("version")
    if version is not None and key is not None:
        meta = json.loads((models_dir / "versions" / version / "training_metadata.json").read_text())
        parent = trained.get(meta.get("parent_version")) if meta.get("warm_started") else set()
        trained[version] = {q for q in snapshot_queries if not is_heldout(q, key)} | (parent or set())
        row["judged_seen"], row["reference_leaked"], _ = leakage(models_dir, meta, trained, key, snapshot_queries)
        auc = ((meta.get("gate") or {}).get("intervals") or {}).get("roc_auc") or {}
        row["gate"] = (auc.get("delta"), auc.get("low"), auc.get("high"))
        row["heldout_pairs"] = (meta.get("gate") or {}).get("heldout_pairs")
        before, after = source_of(models_dir, champion, base), source_of(models_dir, version, base)
        row["true_champion"] = quality.per_query(before).mean(axis=0).tolist()
        row["true_candidate"] = quality.per_query(after).mean(axis=0).tolist()
        row["true_delta"] = quality.delta_interval(before, after)
        row["version"] = version
    if version is not None and job.get("challenger"):
        row["challenge"] = run_challenge(ctx, version)
    row["promoted"] = job.get("promoted") or (row.get("challenge") or {}).get("outcome") in ("promoted", "offline")
    row["promoted"] = bool(row["promoted"]) and versions.read_champion(db).version == version
    row["serving_after"] = versions.read_champion(db).version
    deadline = time.monotonic() + 60
    while row["promoted"] and reranker.version != version and time.monotonic() < deadline:
        reranker.refresh()
        time.sleep(0.5)
    return row


def start(tmp: Path, args: argparse.Namespace) -> tuple[Any, Any, Settings]:
    mongo = secantus_server(tmp / "secantus").start()
    broker = redis_server(tmp / "redis").start()
    url = f"redis://127.0.0.1:{broker.port}"
    settings = replace(
        Settings.from_env({}),
        mongodb_url=mongo_url(mongo.port),
        mongodb_db="closed_loop",
        celery_broker_url=f"{url}/0",
        celery_result_backend=f"{url}/1",
        models_dir=str(tmp / "models"),
        base_model_name=default_base_model(),
        max_length=args.max_length,
        warm_start=args.warm_start,
        split_key=args.split_key or hashlib.sha256(f"closed-loop seed {args.seed}".encode()).hexdigest(),
        seed=args.seed,
        torch_threads=args.threads,
        train_max_pairs=args.train_max_pairs,
        promotion_mode=args.promotion,
    )
    return mongo, broker, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--searches", type=int, default=250, help="searches served per round")
    parser.add_argument("--eta", type=float, default=1.0, help="position bias: rank r examined w.p. (1/r)^eta")
    parser.add_argument("--explore", type=float, default=0.0, help="share of searches with one adjacent swap")
    parser.add_argument("--warm-start", action="store_true")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=10, help="results per search (60%% from the same section)")
    parser.add_argument("--test-queries", type=int, default=150, help="queries never served, for true quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-key", default="", help="SPLIT_KEY (hex); default: from --seed")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for serving and for the worker")
    parser.add_argument("--train-max-pairs", type=int, default=Settings.train_max_pairs, help="TRAIN_MAX_PAIRS")
    parser.add_argument(
        "--sampling",
        choices=("newest", "recency"),
        default="newest",
        help="the training cap's rule: the newest pairs (the worker's) or a recency-weighted sample",
    )
    promotion = "PROMOTION_MODE: users decide a screened challenger, or the offline gate promotes"
    parser.add_argument("--promotion", choices=("interleave", "offline"), default=Settings.promotion_mode,
                        help=promotion)  # fmt: skip
    parser.add_argument("--look-every", type=int, default=25, help="searches between two looks at a challenge")
    parser.add_argument("--challenge-searches", type=int, default=4000, help="searches a challenge may take")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="en", help="the package descriptions' language")
    parser.add_argument("--out", default="", help="write each round's row here (JSON) as it ends")
    parser.add_argument("--no-memo", action="store_true", help="score every request anew (bench/score_memo.py)")
    args = parser.parse_args()
    memo = ScoreMemo()
    if not args.no_memo:
        memo.install()  # a version scores a repeated request once: the same scores, far less time

    torch.set_num_threads(args.threads)  # serving and the worker share the cores: no oversubscription
    world = make_world(args.seed, args.candidates, args.test_queries, load_shipped(CORPORA[args.corpus]))
    tmp = Path(tempfile.mkdtemp(prefix="closed-loop-"))
    mongo, broker, settings = start(tmp, args)
    print(
        f"corpus: {len(world.corpus.packages)} Debian package descriptions "
        f"({args.corpus}, {world.corpus.fingerprint}), "
        f"{len(world.served)} served queries, {len(world.test)} test queries never served; warm start "
        f"{args.warm_start}, explore {args.explore}, eta {args.eta}, seed {args.seed}; TRAIN_MAX_PAIRS "
        f"{args.train_max_pairs} ({args.sampling})"
    )
    db = connect(settings)
    ensure_indexes(db)
    insert_resources(db, world)
    logs = open(tmp / "worker.log", "wb")  # noqa: SIM115 - the worker's for its lifetime
    celery = ["-m", "celery"] if args.sampling == "newest" else [str(ROOT / "bench" / "sampling_worker.py")]
    worker = subprocess.Popen(
        [sys.executable, *celery, "-A", "worker", "worker", "-Q", "training", "-c", "1", "-n", "loop@%h"],
        cwd=ROOT,
        env=child_env(settings),
        stdout=logs,
        stderr=logs,
    )
    reranker = ChampionReranker(
        settings.models_dir,
        base_model=settings.base_model_name,
        poll_seconds=1,
        max_length=args.max_length,
        device="cpu",
    )
    ctx = {
        "db": db,
        "world": world,
        "args": args,
        "models_dir": Path(settings.models_dir),
        "app": make_celery(settings),
        "base": settings.base_model_name,
        "reranker": reranker,
        "quality": TrueQuality(world, args.max_length),
        "trained": {None: set()},
        "rng": random.Random(args.seed),
        "settings": settings,
    }
    rows = []
    try:
        for r in range(args.rounds):
            rows.append(run_round(r, ctx))
            print_row(rows[-1])
            if args.out:  # each round as it ends: a run stopped early keeps what it measured
                Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
        print(f"scorings: {memo.misses} computed, {memo.hits} repeats read from the memo")
        final = source_of(ctx["models_dir"], reranker.version, settings.base_model_name)
        goals(rows, float(ctx["quality"].per_query(final).mean(axis=0)[0]))
        if not args.no_oracle:
            total = db[INFERENCES].count_documents({"feedback": {"$in": ["like", "dislike"]}})
            version = oracle(settings, world, total, args.seed)
            if version:
                folder = str(Path(settings.models_dir) / "oracle" / "versions" / version)
                ndcg, mrr = ctx["quality"].per_query(folder).mean(axis=0)
                print(
                    f"oracle: the same system on {total} uniformly sampled true labels: true NDCG@10 {ndcg:.3f}, "
                    f"MRR {mrr:.3f}"
                )
        return 0
    finally:
        reranker.close()
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop()
        mongo.stop()


if __name__ == "__main__":
    sys.exit(main())
