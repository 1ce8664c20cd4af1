"""The loop measured end to end: serve → position-biased feedback → job → gate, round after round.

    .venv/bin/python bench/closed_loop.py [--rounds 5] [--searches 200] [--warm-start] [--explore 0.1]

Real services: SecantusDB and redis-server on loopback, a real Celery worker (`-c 1`) running each job,
and `ChampionReranker` serving (it follows each promotion). The corpus is real human-written text:
Debian package descriptions (`bench/packages_corpus.py`): a package's summary is the query, its long
description the relevant document, same-section packages the hard negatives among its candidates
(10 by default). 150 queries are test queries, never served: each model's TRUE NDCG@10 and MRR are measured on
them. Simulated users (seeded) examine rank r with probability (1/r)^eta, like the relevant result when
they examine it (95%), dislike half of the non-relevant results they examine, and 2% of reactions are
flipped. Per round it prints the feedback and its share at ranks 1-3, the job's outcome with the gate's
interval, the champion's and candidate's true quality, and two leakage counts measured independently
of the gate: held-out queries the judged champion trained on, and reference queries the candidate
trained on. At the end, an oracle: the same system trained on as many uniformly sampled true labels.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import packages_corpus  # noqa: E402
import torch  # noqa: E402

from eduranker.localcluster import child_env, default_base_model  # noqa: E402
from eduranker.localservers import mongo_url, redis_server, secantus_server  # noqa: E402
from eduranker.pipeline.evaluation import ndcg_at_k, reciprocal_rank  # noqa: E402
from eduranker.pipeline.model_io import load_cross_encoder  # noqa: E402
from eduranker.pipeline.pairs import query_key  # noqa: E402
from eduranker.pipeline.scoring import score_pairs  # noqa: E402
from eduranker.pipeline.split import SplitKey, is_heldout  # noqa: E402
from eduranker.queue import make_celery, send_training_job  # noqa: E402
from eduranker.serving import ChampionReranker  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs  # noqa: E402
from eduranker.store.connection import INFERENCES, RESOURCES, USER_QUERIES  # noqa: E402
from eduranker.store.evaluation_epochs import latest_epoch  # noqa: E402


@dataclass
class World:
    corpus: packages_corpus.Corpus
    served: list[str]  # query package names users search for
    test: list[str]  # never served: true quality is measured on these
    text: dict[str, str] = field(default_factory=dict)  # package → document text
    summary: dict[str, str] = field(default_factory=dict)
    resource_id: dict[str, Any] = field(default_factory=dict)


def make_world(seed: int, candidates: int, test_queries: int) -> World:
    corpus = packages_corpus.build(per_query=candidates, hard=(candidates * 3) // 5, seed=seed)
    names = [p.name for p in corpus.packages]
    rng = random.Random(seed)
    rng.shuffle(names)
    world = World(corpus, sorted(names[test_queries:]), sorted(names[:test_queries]))
    for p in corpus.packages:
        title, description = packages_corpus.document(p)
        world.text[p.name] = f"{title}\n\n{description}"
        world.summary[p.name] = p.summary
    return world


def insert_resources(db: Any, world: World) -> None:
    for p in world.corpus.packages:
        title, description = packages_corpus.document(p)
        doc = {"title": title, "description": description, "subject": p.section}
        world.resource_id[p.name] = db[RESOURCES].insert_one(doc).inserted_id


def explore(order: list[int], rng: random.Random, share: float, top: int = 5) -> list[int]:
    """With probability `share`, swap one random adjacent pair among the top results."""
    order = list(order)
    if share > 0 and rng.random() < share and len(order) >= 2:
        i = rng.randrange(min(top, len(order)) - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    return order


def user_reaction(relevant: bool, rank: int, rng: random.Random, eta: float) -> str | None:
    """A position-based user: examines rank r with probability (1/r)^eta."""
    if rng.random() >= (1.0 / rank) ** eta:
        return None
    reacts = rng.random() < (0.95 if relevant else 0.5)  # like the relevant one; dislike half of the rest
    value = None if not reacts else "like" if relevant else "dislike"
    if value is not None and rng.random() < 0.02:
        value = "dislike" if value == "like" else "like"
    return value


def serve_round(db: Any, world: World, reranker: ChampionReranker, args: argparse.Namespace, rng: random.Random):
    """`args.searches` searches, each a user_queries document and its 20 inferences; then reactions."""
    reactions, ranks = 0, []
    now = datetime.now(UTC)
    for _ in range(args.searches):
        name = rng.choice(world.served)
        user = f"user-{rng.randrange(500)}"
        candidates = world.corpus.candidates[name]
        result = reranker.rerank(world.summary[name], [world.text[c] for c in candidates], key=user)
        order = explore(result.order, rng, args.explore)
        qid = db[USER_QUERIES].insert_one({"query_text": world.summary[name], "user_id": user}).inserted_id
        docs = [
            {
                "query_id": qid,
                "resource_id": world.resource_id[candidates[i]],
                "rank": rank,
                "score": result.scores[i],
                "model_version": result.version,
                "created_at": now,
            }
            for rank, i in enumerate(order, start=1)
        ]
        ids = db[INFERENCES].insert_many(docs).inserted_ids
        for rank, (inference_id, i) in enumerate(zip(ids, order, strict=True), start=1):
            value = user_reaction(candidates[i] == name, rank, rng, args.eta)
            if value is not None:
                db[INFERENCES].update_one({"_id": inference_id}, {"$set": {"feedback": value, "feedback_at": now}})
                reactions += 1
                ranks.append(rank)
    return reactions, ranks


class TrueQuality:
    """NDCG@10 and MRR on the never-served test queries, per model folder (cached)."""

    def __init__(self, world: World, max_length: int):
        self.world, self.max_length, self.cache = world, max_length, {}
        self.device = torch.device("cpu")

    def per_query(self, source: str) -> np.ndarray:
        if source not in self.cache:
            model, tokenizer = load_cross_encoder(source, self.device, 0)
            queries, documents, labels = [], [], []
            for name in self.world.test:
                for c in self.world.corpus.candidates[name]:
                    queries.append(self.world.summary[name])
                    documents.append(self.world.text[c])
                    labels.append(1.0 if c == name else 0.0)
            scores = score_pairs(
                model, tokenizer, queries, documents, device=self.device, max_length=self.max_length, batch_size=64
            )
            k = len(self.world.corpus.candidates[self.world.test[0]])
            rows = []
            for q in range(len(self.world.test)):
                s, lab = scores[q * k : (q + 1) * k], labels[q * k : (q + 1) * k]
                ordered = [lab[i] for i in sorted(range(k), key=lambda i: -s[i])]
                rows.append((ndcg_at_k(ordered, 10), reciprocal_rank(ordered)))
            self.cache[source] = np.array(rows)
        return self.cache[source]

    def delta_interval(self, a: str, b: str, samples: int = 2000) -> tuple[float, float, float]:
        """NDCG@10 change b − a on the test queries, with a 95% paired bootstrap interval over queries."""
        diff = self.per_query(b)[:, 0] - self.per_query(a)[:, 0]
        rng = np.random.default_rng(0)
        draws = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
        return float(diff.mean()), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def wait_for(db: Any, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = jobs.get_job(db, job_id) or {}
        if job.get("status") in jobs.TERMINAL:
            return job
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish in {timeout_s:.0f} s")


def feedback_queries(db: Any) -> set[str]:
    """Query keys of every search that has at least one reaction (what a job's snapshot holds)."""
    ids = db[INFERENCES].distinct("query_id", {"feedback": {"$in": ["like", "dislike"]}})
    return {query_key(d["query_text"]) for d in db[USER_QUERIES].find({"_id": {"$in": ids}}, {"query_text": 1})}


def leakage(
    models_dir: Path,
    job: dict[str, Any],
    trained: dict[str | None, set[str]],
    key: SplitKey,
    snapshot_queries: set[str],
) -> tuple[int, int, int]:
    """(judged held-out queries the champion trained on, reference queries the candidate trained on,
    judged held-out queries), counted from the data and the split, not from what the gate reports."""
    champion = job.get("compared_against")
    champion = None if champion is None or str(champion).startswith("base model") else champion
    candidate_train = {q for q in snapshot_queries if not is_heldout(q, key)}
    heldout = {q for q in snapshot_queries if is_heldout(q, key)}
    judged_seen = len(heldout & trained.get(champion, set()))
    reference: set[str] = set()
    if champion is not None:
        path = models_dir / "versions" / champion / "heldout_pairs.jsonl"
        if path.exists():
            reference = {query_key(json.loads(line)["query"]) for line in path.read_text().splitlines() if line}
    return judged_seen, len(reference & candidate_train), len(heldout)


def oracle(settings: Settings, world: World, n_labels: int, seed: int) -> str | None:
    """The same system trained on `n_labels` uniformly sampled true labels (no position bias)."""
    from worker.job import run_training_job

    s = replace(settings, mongodb_db="closed_loop_oracle", models_dir=str(Path(settings.models_dir) / "oracle"))
    db = connect(s)
    ensure_indexes(db)
    insert_resources(db, world)
    rng = random.Random(seed + 1)
    for _ in range(n_labels):
        name = rng.choice(world.served)
        c = rng.choice(world.corpus.candidates[name])
        qid = db[USER_QUERIES].insert_one({"query_text": world.summary[name]}).inserted_id
        label = (c == name) != (rng.random() < 0.02)
        db[INFERENCES].insert_one(
            {
                "query_id": qid,
                "resource_id": world.resource_id[c],
                "rank": 1,
                "feedback": "like" if label else "dislike",
                "feedback_at": datetime.now(UTC),
            }
        )
    jobs.create_job(db, "oracle", trigger={"reason": "oracle"})
    outcome = run_training_job(s, "oracle")
    return outcome.get("version")


def source_of(models_dir: Path, version: str | None, base: str) -> str:
    return base if version is None else str(models_dir / "versions" / version)


def run_round(r: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """One round: serve, react, one job, its outcome against the truth."""
    db, world, args, models_dir, base = ctx["db"], ctx["world"], ctx["args"], ctx["models_dir"], ctx["base"]
    reranker, quality, trained = ctx["reranker"], ctx["quality"], ctx["trained"]
    reactions, ranks = serve_round(db, world, reranker, args, ctx["rng"])
    top3 = sum(1 for rank in ranks if rank <= 3) / max(1, len(ranks))
    snapshot_queries = feedback_queries(db)
    job_id = f"round-{r}"
    jobs.create_job(db, job_id, trigger={"reason": f"closed-loop round {r}"})
    send_training_job(ctx["app"], job_id)
    job = wait_for(db, job_id)
    epoch = latest_epoch(db)
    key = SplitKey(epoch.epoch, epoch.key, epoch.test_fraction) if epoch else None
    champion = reranker.version
    row: dict[str, Any] = {
        "round": r,
        "reactions": reactions,
        "top3": top3,
        "status": job["status"],
        "reason": job.get("reason") or job.get("gate_reason"),
        "champion": champion,
    }
    version = job.get("version")
    if version is not None and key is not None:
        meta = json.loads((models_dir / "versions" / version / "training_metadata.json").read_text())
        parent = trained.get(meta.get("parent_version")) if meta.get("warm_started") else set()
        trained[version] = {q for q in snapshot_queries if not is_heldout(q, key)} | (parent or set())
        row["judged_seen"], row["reference_leaked"], _ = leakage(models_dir, meta, trained, key, snapshot_queries)
        auc = ((job.get("gate") or {}).get("roc_auc")) or {}
        row["gate"] = (auc.get("delta"), auc.get("low"), auc.get("high"))
        row["heldout_pairs"] = (meta.get("gate") or {}).get("heldout_pairs")
        before, after = source_of(models_dir, champion, base), source_of(models_dir, version, base)
        row["true_champion"] = quality.per_query(before).mean(axis=0).tolist()
        row["true_candidate"] = quality.per_query(after).mean(axis=0).tolist()
        row["true_delta"] = quality.delta_interval(before, after)
        row["version"] = version
    deadline = time.monotonic() + 60
    while job["status"] == jobs.SUCCEEDED and reranker.version != version and time.monotonic() < deadline:
        reranker.refresh()
        time.sleep(0.5)
    return row


def print_row(row: dict[str, Any]) -> None:
    line = f"round {row['round']}: {row['reactions']} reactions ({row['top3']:.0%} at ranks 1-3) → {row['status']}"
    if "gate" in row and row["gate"][0] is not None:
        d, lo, hi = row["gate"]
        line += f" {row.get('version')}: gate ROC-AUC {d:+.3f} [{lo:+.3f}, {hi:+.3f}] on {row['heldout_pairs']} pairs"
    print(line)
    if "true_champion" in row:
        (c_ndcg, c_mrr), (n_ndcg, n_mrr) = row["true_champion"], row["true_candidate"]
        d, lo, hi = row["true_delta"]
        print(
            f"    true NDCG@10 champion {c_ndcg:.3f} → candidate {n_ndcg:.3f} ({d:+.3f} [{lo:+.3f}, {hi:+.3f}]);"
            f" MRR {c_mrr:.3f} → {n_mrr:.3f}; leakage: {row['judged_seen']} held-out queries the champion "
            f"trained on, {row['reference_leaked']} reference queries the candidate trained on"
        )
    print(f"    reason: {row['reason']}")


def goals(rows: list[dict[str, Any]], final_ndcg: float) -> None:
    judged = [r for r in rows if "true_delta" in r]
    promoted = [r for r in judged if r["status"] == jobs.SUCCEEDED]
    worst = min((r["true_delta"][0] for r in promoted), default=0.0)
    missed = [
        r["round"]
        for r in judged
        if r["true_delta"][0] >= 0.03 and (r["heldout_pairs"] or 0) >= 200 and r["status"] != jobs.SUCCEEDED
    ]
    best = max((r["true_candidate"][0] for r in judged), default=0.0)
    print(
        f"goals: leakage {sum(r['judged_seen'] for r in judged)} / {sum(r['reference_leaked'] for r in judged)}"
        f" (want 0 / 0); worst promotion {worst:+.3f} NDCG@10 (want ≥ −0.01); final champion {final_ndcg:.3f} vs "
        f"best candidate {best:.3f} (want within 0.01); truly better by ≥ 0.03 with ≥ 200 held-out pairs but not "
        f"promoted: rounds {missed or 'none'}"
    )


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
        seed=args.seed,
        torch_threads=args.threads,
    )
    return mongo, broker, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--searches", type=int, default=200, help="searches served per round")
    parser.add_argument("--eta", type=float, default=1.0, help="position bias: rank r examined w.p. (1/r)^eta")
    parser.add_argument("--explore", type=float, default=0.0, help="share of searches with one adjacent swap")
    parser.add_argument("--warm-start", action="store_true")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=10, help="results per search (60%% from the same section)")
    parser.add_argument("--test-queries", type=int, default=150, help="queries never served, for true quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for serving and for the worker")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # serving and the worker share the cores: no oversubscription
    world = make_world(args.seed, args.candidates, args.test_queries)
    tmp = Path(tempfile.mkdtemp(prefix="closed-loop-"))
    mongo, broker, settings = start(tmp, args)
    print(
        f"corpus: {len(world.corpus.packages)} Debian package descriptions ({world.corpus.fingerprint}), "
        f"{len(world.served)} served queries, {len(world.test)} test queries never served; warm start "
        f"{args.warm_start}, explore {args.explore}, eta {args.eta}, seed {args.seed}"
    )
    db = connect(settings)
    ensure_indexes(db)
    insert_resources(db, world)
    logs = open(tmp / "worker.log", "wb")  # noqa: SIM115 - the worker's for its lifetime
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "training", "-c", "1", "-n", "loop@%h"],
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
    }
    rows = []
    try:
        for r in range(args.rounds):
            rows.append(run_round(r, ctx))
            print_row(rows[-1])
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
