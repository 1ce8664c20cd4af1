"""A French and an English index in one deployment, round after round: does either champion move when
only the other index's users react?

    .venv/bin/python bench/closed_loop_indexes.py [--schedule fr,en,fr+en,en,fr] [--searches 250]
                                                  [--min-feedback 200] [--min-minority 0.1]
                                                  [--promotion offline|interleave]
                                                  [--seed 0] [--threads 1]

One deployment: one SecantusDB database, one redis, one models folder, one `python -m producer` (a loop
per index), one Celery worker (`-c 1`) taking `training.fr,training.en`, with

    INDEXES='{"fr": {"owns": {"query.index": "fr"}}, "en": {"owns": {"query.index": "en"}}}'

The French corpus (Debian's French package descriptions, `bench/french_corpus.py`) is served by
`ChampionReranker(MODELS_DIR, index="fr")`, the English one (`bench/packages_corpus.py`) by
`index="en"`; every search is written to `user_queries` with its `index`, every result with
`result.inference_fields()`. Each round serves `--searches` searches on each index; only the indexes the
round's entry of `--schedule` names react (the simulated users of `bench/closed_loop_users.py`), the
other's searches are shown and left without feedback. A round's searches are written at its end (one
insert of its searches, one of its results), so the producer's trigger sees the round whole. The jobs
are the producer's own (TRAIN_MIN_FEEDBACK = TRAIN_NEW_FEEDBACK = `--min-feedback`, TRAIN_MIN_MINORITY
`--min-minority`: these users like the relevant result more often than they dislike the rest; no cooldown).
Per round and index: the reactions, the jobs run, the champion before and after, its true NDCG@10 on the
index's never-served test queries (`bench/closed_loop_truth.py`) and, for an index whose users did not
react, whether its champion moved (it must not: the run exits 1 if it did, or if it ran a job).
With `--promotion interleave` a candidate that passes the screen becomes a challenger, and the
producer's own challenge duty decides it on the interleaved searches of the rounds that follow (the
figures in docs/languages.md are from the default, offline).
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

import torch  # noqa: E402
from bson import ObjectId  # noqa: E402
from closed_loop import CORPORA, start  # noqa: E402
from closed_loop_truth import TrueQuality, source_of  # noqa: E402
from closed_loop_users import World, explore, insert_resources, make_world, user_reaction  # noqa: E402
from packages_corpus import load_shipped  # noqa: E402

from console.cluster import child_env  # noqa: E402
from eduranker.pipeline.artifacts import HELDOUT_PAIRS  # noqa: E402
from eduranker.pipeline.pairs import query_key  # noqa: E402
from eduranker.serving import ChampionReranker  # noqa: E402
from eduranker.settings import Settings  # noqa: E402
from eduranker.store import connect, ensure_indexes, jobs, versions  # noqa: E402
from eduranker.store.clock import server_now  # noqa: E402
from eduranker.store.connection import INFERENCES, USER_QUERIES  # noqa: E402
from eduranker.store.types import Db  # noqa: E402
from producer.trigger import describe_next_trigger  # noqa: E402

NAMES = ("fr", "en")  # each index serves the corpus of its language
INDEXES = {name: {"owns": {"query.index": name}} for name in NAMES}


@dataclass
class Side:
    """One index of the deployment: its corpus, its reranker, its view of the database, its truth."""

    name: str
    world: World
    settings: Settings
    db: Db
    reranker: ChampionReranker
    quality: TrueQuality
    rng: random.Random
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def champion(self) -> str | None:
        return versions.read_champion(self.db).version

    def ndcg(self, version: str | None) -> float:
        source = source_of(Path(self.settings.models_dir), version, self.settings.base_model_name)
        return float(self.quality.per_query(source).mean(axis=0)[0])


def serve(side: Side, searches: int, react: bool, args: argparse.Namespace) -> tuple[int, int]:
    """`searches` searches on `side`'s index, written at the end as a search API writes them (the
    search's `index`, each result's `inference_fields()`); reactions only where `react`. Returns
    (reactions, of them at ranks 1-3)."""
    world, rng = side.world, side.rng
    queries, results = [], []
    reactions = top3 = 0
    for _ in range(searches):
        name = rng.choice(world.served)
        user = f"{side.name}-user-{rng.randrange(500)}"
        candidates = world.corpus.candidates[name]
        result = side.reranker.rerank(world.summary[name], [world.text[c] for c in candidates], key=user)
        by_doc = dict(zip(result.order, result.inference_fields(), strict=True))
        qid = ObjectId()
        queries.append({"_id": qid, "query_text": world.summary[name], "user_id": user, "index": side.name})
        now = datetime.now(UTC)
        for rank, i in enumerate(explore(result.order, rng, args.explore), start=1):
            doc = {"query_id": qid, "resource_id": world.resource_id[candidates[i]], **by_doc[i], "rank": rank,
                   "created_at": now}  # fmt: skip
            value = user_reaction(candidates[i] == name, rank, rng, args.eta) if react else None
            if value is not None:
                doc.update(feedback=value, feedback_at=now)
                reactions += 1
                top3 += rank <= 3
            results.append(doc)
    side.db[USER_QUERIES].insert_many(queries)
    side.db[INFERENCES].insert_many(results)
    return reactions, top3


def settle(sides: dict[str, Side], since: datetime, reacting: set[str], timeout_s: float) -> dict[str, list[Any]]:
    """Wait until each reacting index has run a job recorded after `since` (or `timeout_s` passed with
    none: its feedback is below the trigger), and every job since has ended; the jobs per index."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while True:
        found = {name: jobs.jobs_since(side.db, since) for name, side in sides.items()}
        waiting = any(name in reacting and not found[name] for name in sides) and time.monotonic() < deadline
        running = any(job["status"] not in jobs.TERMINAL for listed in found.values() for job in listed)
        if waiting or running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()  # all ended: a few seconds more, for a job a late count would start
        elif time.monotonic() - quiet_since > 5:
            return found
        time.sleep(1)


def follow(side: Side, timeout_s: float = 60) -> None:
    """Until the index's reranker serves its champion (it polls the folder's pointer every second)."""
    deadline = time.monotonic() + timeout_s
    while side.reranker.version != side.champion and time.monotonic() < deadline:
        side.reranker.refresh()
        time.sleep(0.5)


def job_text(side: Side, job: dict[str, Any]) -> str:
    """A job in a few words: its id, outcome and version, the gate's ROC-AUC gain [95% CI] on its held-out
    pairs, the version's true NDCG@10, how many of its held-out queries are not this index's own; a job
    with no version, the first clause of its reason."""
    version = job.get("version")
    outcome = "promoted" if job.get("promoted") else job.get("status")
    text = f"{job['_id']}: {outcome}" + (f" {version}" if version else "")
    if not version:
        reason = str(job.get("reason") or "")
        return f"{text}: {reason.split(':')[0]}" if reason else text
    meta = json.loads((Path(side.settings.models_dir) / "versions" / version / "training_metadata.json").read_text())
    gate = meta.get("gate") or {}
    auc = (gate.get("intervals") or {}).get("roc_auc") or {}
    if auc.get("delta") is not None:
        text += (f", gate ROC-AUC {auc['delta']:+.3f} [{auc['low']:+.3f}, {auc['high']:+.3f}] on "
                 f"{gate.get('heldout_pairs')} pairs")  # fmt: skip
    return f"{text}, true NDCG@10 {side.ndcg(version):.3f}, {foreign_queries(side, version)} foreign held-out queries"


def foreign_queries(side: Side, version: str) -> int:
    """Held-out queries of `version` that are no search of this index's corpus (another index's feedback)."""
    path = Path(side.settings.models_dir) / "versions" / version / HELDOUT_PAIRS
    own = {query_key(summary) for summary in side.world.summary.values()}  # as the trainer normalises texts
    lines = path.read_text().splitlines() if path.exists() else []
    return len({q for line in lines if line and (q := query_key(json.loads(line)["query"])) not in own})


def run_round(r: int, entry: str, sides: dict[str, Side], args: argparse.Namespace) -> float:
    """One round: every index serves; only the entry's indexes react; their jobs run; one row each."""
    reacting = set(entry.split("+"))
    began = time.monotonic()
    since = server_now(next(iter(sides.values())).db)
    before = {name: side.champion for name, side in sides.items()}
    served = {name: serve(side, args.searches, name in reacting, args) for name, side in sides.items()}
    found = settle(sides, since, reacting, args.job_wait)
    for name, side in sides.items():
        follow(side)
        after = side.champion
        moved = after != before[name]
        row = {
            "round": r, "index": name, "react": name in reacting, "reactions": served[name],
            "jobs": [job_text(side, job) for job in found[name]] or ["none"],
            "before": before[name], "after": after, "ndcg": side.ndcg(after), "moved": moved,
            "serving": side.reranker.version, "trigger": describe_next_trigger(side.db, side.settings),
        }  # fmt: skip
        side.rows.append(row)
        print_row(row)
    seconds = time.monotonic() - began
    print(f"  round {r} took {seconds / 60:.1f} min", flush=True)
    return seconds


def print_row(row: dict[str, Any]) -> None:
    reactions, top3 = row["reactions"]
    users = f"{reactions} reactions ({top3 / max(1, reactions):.0%} at ranks 1-3)" if row["react"] else "no reactions"
    print(f"round {row['round']} {row['index']}: users react: {'yes' if row['react'] else 'no'}, {users}")
    print(f"    jobs: {'; '.join(row['jobs'])}")
    print(f"    champion {row['before'] or 'base'} → {row['after'] or 'base'} (serving {row['serving'] or 'base'}),"
          f" true NDCG@10 {row['ndcg']:.3f}; champion moved: {'yes' if row['moved'] else 'no'}")  # fmt: skip
    print(f"    trigger now: {row['trigger']}", flush=True)


def table(sides: dict[str, Side], seconds: list[float]) -> list[str]:
    """The rows as a Markdown table, round by round; the quiet indexes whose champion moved or that ran a job."""
    print("\n| round | index | users react | reactions (at ranks 1–3) | jobs | champion | true NDCG@10 "
          "| champion moved |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    broken = []
    for r, spent in enumerate(seconds):
        for side in sides.values():
            row = side.rows[r]
            reactions, top3 = row["reactions"]
            react = f"{reactions} ({top3 / max(1, reactions):.0%})" if row["react"] else "0 (searches only)"
            champion = f"{row['before'] or 'base'} → {row['after'] or 'base'}"
            print(f"| {r} ({spent / 60:.1f} min) | {side.name} | {'yes' if row['react'] else '**no**'} | {react} "
                  f"| {'; '.join(row['jobs'])} | {champion} | {row['ndcg']:.3f} "
                  f"| {'yes' if row['moved'] else 'no'} |")  # fmt: skip
            if not row["react"] and (row["moved"] or row["jobs"] != ["none"]):
                broken.append(f"round {r}: index {side.name}'s users did not react, yet it ran {row['jobs']}, "
                              f"champion {row['before']} → {row['after']}")  # fmt: skip
    return broken


def deploy(tmp: Path, args: argparse.Namespace) -> tuple[list[Any], list[subprocess.Popen[bytes]], Settings]:
    mongo, broker, base = start(tmp, args)
    settings = replace(base, mongodb_db="two_indexes", indexes=json.dumps(INDEXES), metrics_port=0,
                       train_min_feedback=args.min_feedback, train_new_feedback=args.min_feedback,
                       train_min_minority=args.min_minority, train_cooldown_seconds=0)  # fmt: skip
    for s in settings.each_index():
        ensure_indexes(connect(s))
    env = child_env(settings)
    children = []
    for argv, log in (
        (["-m", "celery", "-A", "worker", "worker", "-Q", "training.fr,training.en", "-c", "1", "-n", "two@%h"],
         "worker.log"),
        (["-m", "producer"], "producer.log"),
    ):  # fmt: skip
        with open(tmp / log, "wb") as out:
            children.append(subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=out))
    return [mongo, broker], children, settings


def make_side(name: str, settings: Settings, args: argparse.Namespace) -> Side:
    s = settings.for_index(name)
    world = make_world(args.seed, args.candidates, args.test_queries, load_shipped(CORPORA[name]))
    db = connect(s)
    insert_resources(db, world)
    reranker = ChampionReranker(settings.models_dir, base_model=s.base_model_name, poll_seconds=1,
                                max_length=args.max_length, device="cpu", index=name)  # fmt: skip
    seed = args.seed + NAMES.index(name) + 1
    return Side(name, world, s, db, reranker, TrueQuality(world, args.max_length), random.Random(seed))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="fr,en,fr+en,en,fr", help="per round, the indexes whose users react")
    parser.add_argument("--searches", type=int, default=250, help="searches per index per round")
    parser.add_argument("--min-feedback", type=int, default=200, help="TRAIN_MIN_FEEDBACK and TRAIN_NEW_FEEDBACK")
    parser.add_argument("--min-minority", type=float, default=0.1, help="TRAIN_MIN_MINORITY")
    parser.add_argument("--promotion", choices=("offline", "interleave"), default="offline", help="PROMOTION_MODE")
    parser.add_argument("--eta", type=float, default=1.0, help="position bias: rank r examined w.p. (1/r)^eta")
    parser.add_argument("--explore", type=float, default=0.0, help="share of searches with one adjacent swap")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--test-queries", type=int, default=150, help="queries never served, for true quality")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for serving and for the worker")
    parser.add_argument("--job-wait", type=float, default=120, help="seconds to wait for a reacting index's job")
    args = parser.parse_args()
    # What closed_loop.start reads and this benchmark leaves at the loop's defaults.
    args.warm_start, args.split_key, args.train_max_pairs = False, "", Settings.train_max_pairs
    bad = [e for e in args.schedule.split(",") if not set(e.split("+")) <= set(NAMES)]
    if bad:
        parser.error(f"--schedule: {bad} name no index of {NAMES}")
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="closed-loop-indexes-"))
    servers, children, settings = deploy(tmp, args)
    sides: dict[str, Side] = {}
    try:
        sides = {name: make_side(name, settings, args) for name in NAMES}
        print(f"INDEXES={settings.indexes}; one producer, one worker on training.fr,training.en; "
              f"PROMOTION_MODE={settings.promotion_mode}; {args.searches} searches per index per round; "
              f"trigger at {args.min_feedback} feedbacks; logs in {tmp}")  # fmt: skip
        for name, side in sides.items():
            print(f"  {name}: {len(side.world.corpus.packages)} packages, {len(side.world.test)} test queries; "
                  f"base true NDCG@10 {side.ndcg(None):.3f}", flush=True)  # fmt: skip
        seconds = [run_round(r, entry, sides, args) for r, entry in enumerate(args.schedule.split(","))]
        broken = table(sides, seconds)
        for line in broken:
            print(f"NOT isolated: {line}")
        print("isolation: " + ("met" if not broken else "NOT met") + " (no champion moved, no job ran, for an "
              "index whose users did not react)")  # fmt: skip
        return 1 if broken else 0
    finally:
        for side in sides.values():
            side.reranker.close()
        for child in reversed(children):
            child.terminate()
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
