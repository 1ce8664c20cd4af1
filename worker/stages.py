"""The stages of a training job, each a named function with typed inputs and outputs.

`worker.steps.train_and_register` calls them in order; torch is imported by the modules they use,
which only the job's process loads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from eduranker.errors import JobRefused, Superseded
from eduranker.models_dir import version_dir
from eduranker.pipeline import artifacts, text
from eduranker.pipeline.bounds import Read, newest, read_newest_first
from eduranker.pipeline.caps import ReactionCap
from eduranker.pipeline.device import is_out_of_memory, release_memory
from eduranker.pipeline.evaluation import compute_metrics
from eduranker.pipeline.gate import GateRule, PairedScores, insufficient
from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.pairs import Pair, Snapshot, SnapshotBuilder
from eduranker.pipeline.scoring import score_pairs
from eduranker.pipeline.split import SplitKey, is_heldout, stable_split, unseen_by
from eduranker.pipeline.training import TrainConfig, TrainingStopped, TrainStats, fine_tune
from eduranker.records import SplitSummary
from eduranker.settings import Settings
from eduranker.store import evaluation_epochs, versions
from eduranker.store.clock import server_now
from eduranker.store.snapshot import FeedbackReader, iter_feedback_rows
from eduranker.store.types import Db
from worker.run import Run
from worker.stop_check import StopCheck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    train: list[Pair]
    test: list[Pair]
    key: SplitKey

    def summary(self) -> SplitSummary:
        return {"train": len(self.train), "test": len(self.test), "test_queries": len(queries_of(self.test, self.key)),
                **self.key.describe()}  # fmt: skip


@dataclass
class Baseline:
    """The model serving now (the champion, or the base model before any), judged on held-out pairs
    that it never trained on: `judged` (this job's held-out pairs, less any the champion's lineage trained
    on) and its own frozen held-out pairs, less any the candidate trains on."""

    champion_version: str | None
    source: str
    lineage: list[SplitKey | None]  # the epochs the champion and its warm-start ancestors trained under
    judged: list[Pair]
    fairness: dict[str, Any]  # what was left out, and whether the champion may have seen some pairs
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


def queries_of(pairs: list[Pair], key: SplitKey) -> set[str]:
    """The distinct queries of `pairs`, as the epoch's split tells queries apart."""
    return {key.query_of(p.query) for p in pairs}


def _revision(source: str, s: Settings) -> str | None:
    """BASE_MODEL_REVISION pins the configured base model; a version folder is loaded as it is."""
    return (s.base_model_revision or None) if source == s.base_model_name else None


def split_key(db: Db, s: Settings, job_id: str) -> SplitKey:
    """The stable split's key and fraction in force (starting the next epoch when the settings ask for
    another): read before the snapshot, which stops once each side holds what its cap can use. Refused
    when the stored epochs do not match what the registry's versions recorded (docs/gate.md)."""
    problem = evaluation_epochs.check_epochs(db)
    if problem:
        raise JobRefused(problem)
    record = evaluation_epochs.current_epoch(db, s.test_fraction, s.split_key, by=f"job {job_id}",
                                             query_key_version=text.LATEST)  # fmt: skip
    return split_key_of(record)


def split_key_of(record: evaluation_epochs.EpochRecord) -> SplitKey:
    return SplitKey(record.epoch, record.key, record.test_fraction, record.query_key_version)


def take_snapshot(db: Db, s: Settings, run: Run, key: SplitKey) -> Snapshot:
    """1. The feedback as it is now: joined, cleaned, deduplicated, skips counted. Read newest first
    until each side of the split holds TRAIN_MAX_PAIRS and GATE_MAX_PAIRS distinct pairs (with a cap of
    0, everything); `read` on the job's record says how far it read and why it stopped there."""
    started = time.perf_counter()
    now = server_now(db)  # feedback dated after the server's now (a skewed API host) is taken as now, and counted
    cap = ReactionCap(s.max_reactions_per_user_per_day)  # one account cannot swing the labels
    builder = SnapshotBuilder(s.max_text_chars, now, heldout=lambda query: is_heldout(query, key),
                              key_version=key.query_key_version)  # fmt: skip
    windows: int | None = None
    if s.train_max_pairs > 0 and s.gate_max_pairs > 0:
        reader = FeedbackReader(db, s.max_text_chars, slice_field=s.slice_field)
        read = read_newest_first(cap.by_day(reader.newest_first(now)), lambda: cap.rest(reader.without_time()),
                                 builder, s.train_max_pairs, s.gate_max_pairs)  # fmt: skip
        windows = reader.windows
    else:
        for row in cap.apply(iter_feedback_rows(db, s.max_text_chars, slice_field=s.slice_field)):
            builder.add(row)
        read = Read(False, builder.train, builder.heldout, s.train_max_pairs, s.gate_max_pairs)
    snapshot = builder.build()
    rows_read = snapshot.rows_seen + cap.dropped  # the reactions the cap dropped were read too
    summary = {**snapshot.summary(), "capped": cap.report(),
               "read": {**read.report(), "rows_read": rows_read, "windows": windows}}  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - started, 3)
    run.update("recording the snapshot", snapshot=summary)
    log.info("job %s snapshot: %s; read %s", run.job_id,
             {k: summary[k] for k in ("pairs", "label_counts", "skipped")}, summary["read"])  # fmt: skip
    return snapshot


def split_for_judging(snapshot: Snapshot, s: Settings, run: Run, rule: GateRule, key: SplitKey) -> Split:
    """2. Train and held-out pairs by the stable split; refuse data the gate could not judge."""
    n, counts = len(snapshot.pairs), snapshot.label_counts
    if n < s.min_feedback:
        raise JobRefused(f"not enough feedback: {n} usable pairs, need {s.min_feedback}")
    if counts["like"] == 0 or counts["dislike"] == 0:
        only = "like" if counts["like"] else "dislike"
        raise JobRefused(f"only one class: all {n} usable pairs are '{only}'; need both likes and dislikes")
    train, test = stable_split(snapshot.pairs, key)
    split = Split(train, test, key)
    run.update("recording the split", split=split.summary())
    labels = [p.label for p in test]
    too_small = insufficient(PairedScores(labels, labels, labels, [key.query_of(p.query) for p in test]), rule)
    if too_small:
        raise JobRefused(
            f"{too_small} (from {n} usable pairs: the stable split holds out {len(test)} pairs of "
            f"{len(queries_of(test, key))} of the {len(queries_of(snapshot.pairs, key))} queries); nothing trained, "
            f"nothing registered"
        )
    if len({p.label for p in train}) < 2:
        raise JobRefused(
            f"the training side ({len(train)} of {n} usable pairs) lacks likes or dislikes; more queries with "
            f"feedback are needed"
        )
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


def _capped(pairs: list[Pair], cap: int) -> tuple[list[Pair], dict[str, Any]]:
    bounded = newest(pairs, cap)  # eduranker/pipeline/bounds.py
    return bounded.kept, bounded.report()


def metrics_of(pairs: list[Pair], scores: np.ndarray, key: SplitKey) -> dict[str, Any]:
    return compute_metrics([p.label for p in pairs], scores, [key.query_of(p.query) for p in pairs])


def lineage_of(db: Db, version: str | None) -> list[SplitKey | None]:
    """The split epochs a version and its warm-start ancestors trained under; None for a version from
    before stable splits (what it trained on is unknown). The base model trained on none of our data."""
    if version is None:
        return []
    recorded = (versions.get_version(db, version).get("split") or {}).get("lineage")
    if not isinstance(recorded, list):
        return [None]
    keys: list[SplitKey | None] = []
    fingerprints = evaluation_epochs.recorded_fingerprints(db)  # an epoch holding another key is unknown
    for epoch in recorded:
        record = evaluation_epochs.verified_epoch(db, epoch, fingerprints) if isinstance(epoch, int) else None
        keys.append(split_key_of(record) if record else None)
    return keys


def held_out_from_all(pairs: list[Pair], lineage: list[SplitKey | None]) -> tuple[list[Pair], bool]:
    """The pairs held out under every epoch of `lineage`, and whether that is known (no unknown epoch)."""
    if any(key is None for key in lineage):
        return pairs, False
    for key in lineage:
        pairs, _ = unseen_by(pairs, key)
    return pairs, True


def fair_heldout(split: Split, lineage: list[SplitKey | None], rule: GateRule) -> tuple[list[Pair], dict[str, Any]]:
    """This job's held-out pairs that the champion never trained on. When that cannot be known (a champion
    from before stable splits) or leaves too few pairs to decide (a new epoch), all held-out pairs are used
    and the gate says that the champion may have seen some of them."""
    unseen, known = held_out_from_all(split.test, lineage)
    labels = [p.label for p in unseen]
    enough = not insufficient(PairedScores(labels, labels, labels, [split.key.query_of(p.query) for p in unseen]), rule)
    fair = known and enough
    judged = unseen if fair else split.test
    fairness = {
        "heldout_pairs": len(split.test),
        "excluded_champion_trained": len(split.test) - len(judged),
        "champion_may_have_seen": not fair,
        "champion_epochs": [key.epoch if key else None for key in lineage],
        "epoch": split.key.epoch,
    }
    return judged, fairness


def judge_champion(db: Db, s: Settings, split: Split, device: torch.device, rule: GateRule) -> Baseline:
    """3. Score, with the model serving now, the held-out pairs it never trained on, and its own frozen
    held-out pairs that the candidate will not train on."""
    record = versions.read_champion(db)
    source = str(version_dir(s.models_dir, record.version)) if record.version else s.base_model_name
    lineage = lineage_of(db, record.version)
    judged, fairness = fair_heldout(split, lineage, rule)
    judged, fairness["gate_cap"] = _capped(judged, s.gate_max_pairs)  # GATE_MAX_PAIRS, the newest
    model, tokenizer = load_cross_encoder(source, device, s.seed, revision=_revision(source, s))
    scores = _score(model, tokenizer, judged, s, device)
    frozen = artifacts.read_heldout_pairs(source) if record.version else []
    candidate_lineage: list[SplitKey | None] = [split.key, *(lineage if s.warm_start else [])]
    reference, _ = held_out_from_all(frozen, [k for k in candidate_lineage if k is not None])
    fairness["reference_excluded_candidate_trains"] = len(frozen) - len(reference)
    reference, fairness["reference_cap"] = _capped(reference, s.gate_max_pairs)
    reference_scores = _score(model, tokenizer, reference, s, device)
    return Baseline(record.version, source, lineage, judged, fairness, scores, reference, reference_scores,
                    metrics_of(judged, scores, split.key))  # fmt: skip


def fine_tune_candidate(
    s: Settings, split: Split, baseline: Baseline, device: torch.device, run: Run, config: TrainConfig | None = None
) -> Candidate:
    """4. Fine-tune from the base model (or the champion with WARM_START); on CUDA out-of-memory halve
    the batch and start again from the untouched start weights. A run that loses its job stops within
    a step (worker/stop_check.py) and raises StoppedTraining, saying how far it got."""
    source = baseline.source if (s.warm_start and baseline.champion_version) else s.base_model_name
    config = config or s.config(TrainConfig)  # the job's, built once (worker/steps.py)
    pairs, left_out = _capped(split.train, s.train_max_pairs)  # TRAIN_MAX_PAIRS, the newest
    run.update("recording the training cap", train_cap=left_out)
    oom_retries: list[dict[str, int]] = []
    check, reached = StopCheck(run.db, run), [0, 0]  # the last step taken, of how many

    def on_step(epoch: int, step: int, total: int, loss: float) -> None:
        reached[:] = [step, total]
        run.progress("train", force=step == total, epoch=epoch, step=step, total_steps=total, loss=round(loss, 5))

    while True:
        model, tokenizer = load_cross_encoder(source, device, config.seed, revision=_revision(source, s))
        try:
            stats = fine_tune(model, tokenizer, [p.query for p in pairs], [p.document for p in pairs],
                              [p.label for p in pairs], config, device=device, on_step=on_step,
                              should_stop=check)  # fmt: skip
            return Candidate(model, tokenizer, config, stats, source, oom_retries)
        except TrainingStopped as stopped:
            raise check.stopped(stopped.steps, stopped.total_steps) from None
        except Superseded:  # the heartbeat or a progress write noticed first, just after a step
            raise check.stopped(*reached) from None
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
    scores = _score(candidate.model, candidate.tokenizer, baseline.judged, s, device)
    reference_scores = _score(candidate.model, candidate.tokenizer, baseline.reference_pairs, s, device)
    return Judged(scores, reference_scores, metrics_of(baseline.judged, scores, split.key))


def comparisons(split: Split, baseline: Baseline, judged: Judged) -> tuple[PairedScores, PairedScores | None]:
    """(held-out, frozen reference) comparisons of champion and candidate for the gate."""

    def compare(pairs: list[Pair], before: np.ndarray, after: np.ndarray) -> PairedScores:
        return PairedScores([p.label for p in pairs], before.tolist(), after.tolist(),
                          [split.key.query_of(p.query) for p in pairs], [p.slice for p in pairs])  # fmt: skip

    heldout = compare(baseline.judged, baseline.scores, judged.scores)
    if not baseline.reference_pairs:
        return heldout, None
    return heldout, compare(baseline.reference_pairs, baseline.reference_scores, judged.reference_scores)


def plot_inputs(snapshot: Snapshot, split: Split, baseline: Baseline, judged: Judged) -> dict[str, Any]:
    return {
        "label_counts": snapshot.label_counts,
        "query_lengths": [len(p.query.split()) for p in snapshot.pairs],
        "before": baseline.metrics,
        "after": judged.metrics,
        "test_labels": [p.label for p in baseline.judged],
        "scores_before": baseline.scores,
        "scores_after": judged.scores,
    }
