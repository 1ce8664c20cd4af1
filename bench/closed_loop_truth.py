"""True quality and leakage, measured by the closed loop independently of the gate (`bench/closed_loop.py`).

True NDCG@10 and MRR are measured on the test queries, never served, over all their candidates. The
leakage counts come from the data and the split, not from the gate's report. The oracle is the same
system trained on as many uniformly sampled true labels.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from closed_loop_users import World, insert_resources

from eduranker.pipeline.evaluation import ndcg_at_k, reciprocal_rank
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.pairs import query_key
from eduranker.pipeline.scoring import score_pairs
from eduranker.pipeline.split import SplitKey, is_heldout
from eduranker.settings import Settings
from eduranker.store import connect, ensure_indexes, jobs
from eduranker.store.connection import INFERENCES, USER_QUERIES


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
