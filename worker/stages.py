"""The stages of a training job, each a named function with typed inputs and outputs.

`worker.pipeline.train_and_register` calls them in order; torch is imported by the modules they use,
which only the job's process loads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from eduranker.errors import JobRefused
from eduranker.models_dir import version_dir
from eduranker.pipeline import artifacts
from eduranker.pipeline.device import is_out_of_memory, release_memory
from eduranker.pipeline.evaluation import compute_metrics
from eduranker.pipeline.gate import Comparison, GateRule, insufficient
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.pairs import Pair, Snapshot, build_snapshot, query_key, split_pairs
from eduranker.pipeline.scoring import score_pairs
from eduranker.pipeline.training import TrainConfig, TrainStats, fine_tune
from eduranker.settings import Settings
from eduranker.store import versions
from eduranker.store.snapshot import iter_feedback_rows
from eduranker.store.types import Db
from worker.run import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    train: list[Pair]
    test: list[Pair]

    def summary(self) -> dict[str, int]:
        return {"train": len(self.train), "test": len(self.test), "test_queries": len(queries_of(self.test))}


@dataclass
class Baseline:
    """The model serving now (the champion, or the base model before any), judged on the held-out pairs."""

    champion_version: str | None
    source: str
    scores: np.ndarray
    reference_pairs: list[Pair]  # the champion's own frozen held-out pairs
    reference_scores: np.ndarray
    metrics: dict[str, Any]


@dataclass
class Candidate:
    model: Any
    tokenizer: Any
    config: TrainConfig
    stats: TrainStats
    started_from: str
    oom_retries: list[dict[str, int]]


@dataclass(frozen=True)
class Judged:
    scores: np.ndarray
    reference_scores: np.ndarray
    metrics: dict[str, Any]


def queries_of(pairs: list[Pair]) -> set[str]:
    return {query_key(p.query) for p in pairs}


def gate_rule(s: Settings) -> GateRule:
    return GateRule(
        min_improvement=s.min_improvement,
        confidence=s.gate_confidence,
        samples=s.gate_bootstrap_samples,
        min_pairs=s.min_heldout_pairs,
        min_queries=s.min_heldout_queries,
        max_regression=s.gate_max_regression,
        seed=s.seed,
    )


def take_snapshot(db: Db, s: Settings, run: Run) -> Snapshot:
    """1. The feedback as it is now: joined, cleaned, deduplicated, skips counted."""
    started = time.perf_counter()
    snapshot = build_snapshot(iter_feedback_rows(db, s.max_text_chars), s.max_text_chars)
    summary = snapshot.summary()
    summary["seconds"] = round(time.perf_counter() - started, 3)
    run.update("recording the snapshot", snapshot=summary)
    log.info("job %s snapshot: %s", run.job_id, {k: summary[k] for k in ("pairs", "label_counts", "skipped")})
    return snapshot


def split_for_judging(snapshot: Snapshot, s: Settings, run: Run) -> Split:
    """2. Train and held-out pairs, no query on both sides; refuse data the gate could not judge."""
    n, counts = len(snapshot.pairs), snapshot.label_counts
    if n < s.min_feedback:
        raise JobRefused(f"not enough feedback: {n} usable pairs, need {s.min_feedback}")
    if counts["like"] == 0 or counts["dislike"] == 0:
        only = "like" if counts["like"] else "dislike"
        raise JobRefused(f"only one class: all {n} usable pairs are '{only}'; need both likes and dislikes")
    train, test = split_pairs(snapshot.pairs, s.test_fraction, s.seed)
    if not test:
        raise JobRefused(
            f"cannot hold out likes and dislikes without splitting a query: {n} usable pairs from "
            f"{len(queries_of(snapshot.pairs))} distinct queries; more queries with feedback are needed"
        )
    split = Split(train, test)
    run.update("recording the split", split=split.summary())
    labels = [p.label for p in test]
    too_small = insufficient(Comparison(labels, labels, labels, [query_key(p.query) for p in test]), gate_rule(s))
    if too_small:
        raise JobRefused(f"{too_small} (from {n} usable pairs); nothing trained, nothing registered")
    return split


def _score(model: Any, tokenizer: Any, pairs: list[Pair], s: Settings, device: torch.device) -> np.ndarray:
    return score_pairs(
        model,
        tokenizer,
        [p.query for p in pairs],
        [p.document for p in pairs],
        device=device,
        max_length=s.max_length,
        batch_size=s.eval_batch_size,
    )


def metrics_of(pairs: list[Pair], scores: np.ndarray) -> dict[str, Any]:
    return compute_metrics([p.label for p in pairs], scores, [query_key(p.query) for p in pairs])


def judge_champion(db: Db, s: Settings, split: Split, device: torch.device) -> Baseline:
    """3. Score the held-out pairs, and the champion's frozen ones, with the model serving now."""
    record = versions.read_champion(db)
    source = str(version_dir(s.models_dir, record.version)) if record.version else s.base_model_name
    model, tokenizer = load_cross_encoder(source, device, s.seed)
    scores = _score(model, tokenizer, split.test, s, device)
    reference = artifacts.read_heldout_pairs(source) if record.version else []
    reference_scores = _score(model, tokenizer, reference, s, device)
    return Baseline(record.version, source, scores, reference, reference_scores, metrics_of(split.test, scores))


def fine_tune_candidate(s: Settings, split: Split, baseline: Baseline, device: torch.device, run: Run) -> Candidate:
    """4. Fine-tune from the base model (or the champion with WARM_START); on CUDA out-of-memory halve
    the batch and start again from the untouched start weights."""
    source = baseline.source if (s.warm_start and baseline.champion_version) else s.base_model_name
    config = TrainConfig(
        epochs=s.num_epochs,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        head_learning_rate=s.head_learning_rate,
        max_length=s.max_length,
        seed=s.seed,
        freeze_embeddings=s.freeze_embeddings,
        precision=s.train_precision,
    )
    pairs = split.train
    oom_retries: list[dict[str, int]] = []

    def on_step(epoch: int, step: int, total: int, loss: float) -> None:
        run.progress("train", force=step == total, epoch=epoch, step=step, total_steps=total, loss=round(loss, 5))

    while True:
        model, tokenizer = load_cross_encoder(source, device, config.seed)
        try:
            stats = fine_tune(model, tokenizer, [p.query for p in pairs], [p.document for p in pairs],
                              [p.label for p in pairs], config, device=device, on_step=on_step)  # fmt: skip
            return Candidate(model, tokenizer, config, stats, source, oom_retries)
        except Exception as exc:
            if not is_out_of_memory(exc) or config.batch_size == 1:
                raise
            smaller = max(1, config.batch_size // 2)
            log.warning("out of memory at batch %d; retrying with %d", config.batch_size, smaller)
            oom_retries.append({"batch_size": config.batch_size, "retry_with": smaller})
            del model
            release_memory(device)
            config = replace(config, batch_size=smaller)


def judge_candidate(
    candidate: Candidate, s: Settings, split: Split, baseline: Baseline, device: torch.device
) -> Judged:
    """5. Score the same pairs with the candidate."""
    scores = _score(candidate.model, candidate.tokenizer, split.test, s, device)
    reference_scores = _score(candidate.model, candidate.tokenizer, baseline.reference_pairs, s, device)
    return Judged(scores, reference_scores, metrics_of(split.test, scores))


def comparisons(split: Split, baseline: Baseline, judged: Judged) -> tuple[Comparison, Comparison | None]:
    """(held-out, frozen reference) comparisons of champion and candidate for the gate."""

    def compare(pairs: list[Pair], before: np.ndarray, after: np.ndarray) -> Comparison:
        return Comparison(
            [p.label for p in pairs], before.tolist(), after.tolist(), [query_key(p.query) for p in pairs]
        )

    heldout = compare(split.test, baseline.scores, judged.scores)
    if not baseline.reference_pairs:
        return heldout, None
    return heldout, compare(baseline.reference_pairs, baseline.reference_scores, judged.reference_scores)


def plot_inputs(snapshot: Snapshot, split: Split, baseline: Baseline, judged: Judged) -> dict[str, Any]:
    return {
        "label_counts": snapshot.label_counts,
        "query_lengths": [len(p.query.split()) for p in snapshot.pairs],
        "before": baseline.metrics,
        "after": judged.metrics,
        "test_labels": [p.label for p in split.test],
        "scores_before": baseline.scores,
        "scores_after": judged.scores,
    }
