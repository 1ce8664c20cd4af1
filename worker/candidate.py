"""Build a candidate model for a job and register it: the torch side of a training job."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from eduranker.errors import JobRefused
from eduranker.settings import Settings
from eduranker.store import jobs, versions
from worker import artifacts
from worker.device import configure_threads, describe, is_out_of_memory, release_memory, select_device
from worker.evaluation import compute_metrics
from worker.gate import decide_promotion
from worker.job import champion_path, check_trainable, take_snapshot
from worker.model_io import load_cross_encoder, save_cross_encoder
from worker.pairs import Pair, query_key, split_pairs
from worker.report import render_report, write_plots
from worker.scoring import score_pairs
from worker.training import TrainConfig, fine_tune

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 1.0


def _columns(pairs: list[Pair]) -> tuple[list[str], list[str], list[float], list[str]]:
    return (
        [p.query for p in pairs],
        [p.document for p in pairs],
        [p.label for p in pairs],
        [query_key(p.query) for p in pairs],
    )


def train_and_register(db, s: Settings, job_id: str, *, report) -> dict[str, Any]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    report("snapshot")
    snapshot = take_snapshot(db, s, job_id)
    check_trainable(snapshot, s.min_feedback)
    train, test = split_pairs(snapshot.pairs, s.test_fraction, s.seed)
    if not test:
        n_queries = len({query_key(p.query) for p in snapshot.pairs})
        raise JobRefused(
            f"cannot hold out likes and dislikes without splitting a query: {len(snapshot.pairs)} usable "
            f"pairs from {n_queries} distinct queries; more queries with feedback are needed"
        )
    split = {"train": len(train), "test": len(test), "test_queries": len({query_key(p.query) for p in test})}
    jobs.update_job(db, job_id, split=split)
    lap("snapshot")

    threads = configure_threads(s.torch_threads)
    device = select_device()
    jobs.update_job(db, job_id, device=describe(device))
    champion = versions.get_champion(db)
    before_source = champion_path(s, champion) or s.base_model_name
    start_source = champion_path(s, champion) if (s.warm_start and champion) else s.base_model_name
    tq, td, ty, tk = _columns(test)

    report("evaluate_before")
    model, tokenizer = load_cross_encoder(before_source, device, s.seed)
    scores_before = score_pairs(
        model, tokenizer, tq, td, device=device, max_length=s.max_length, batch_size=s.eval_batch_size
    )
    before = compute_metrics(ty, scores_before, tk)
    # The champion's own held-out pairs, with the labels they had when it was trained (see the gate).
    reference_pairs = artifacts.read_heldout_pairs(before_source) if champion else []
    rq, rd, ry, rk = _columns(reference_pairs)

    def on_reference(model, tokenizer) -> dict[str, Any]:
        scores = score_pairs(
            model, tokenizer, rq, rd, device=device, max_length=s.max_length, batch_size=s.eval_batch_size
        )
        return compute_metrics(ry, scores, rk)

    reference_before = on_reference(model, tokenizer) if reference_pairs else None
    lap("evaluate_before")

    config = TrainConfig(
        epochs=s.num_epochs,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        head_learning_rate=s.head_learning_rate,
        max_length=s.max_length,
        seed=s.seed,
        freeze_embeddings=s.freeze_embeddings,
    )
    if start_source != before_source:
        model, tokenizer = load_cross_encoder(start_source, device, s.seed)
    model, stats, config, oom_retries = _train_with_oom_retry(
        model, tokenizer, train, config, device, start_source, report
    )
    lap("train")

    report("evaluate_after")
    scores_after = score_pairs(
        model, tokenizer, tq, td, device=device, max_length=s.max_length, batch_size=s.eval_batch_size
    )
    after = compute_metrics(ty, scores_after, tk)
    reference = (reference_before, on_reference(model, tokenizer)) if reference_before is not None else None
    decision = decide_promotion(before, after, s.min_improvement, reference=reference)
    lap("evaluate_after")

    report("write_artifacts")
    version = versions.allocate_version(db)
    hyperparameters = {
        "num_epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "head_learning_rate": config.head_learning_rate,
        "max_length": config.max_length,
        "freeze_embeddings": config.freeze_embeddings,
        "seed": config.seed,
        "test_fraction": s.test_fraction,
        "warm_start": s.warm_start,
        "min_improvement": s.min_improvement,
        "torch_threads": threads,
    }
    meta: dict[str, Any] = {
        "version": version,
        "job_id": job_id,
        "base_model": s.base_model_name,
        "started_from": start_source,
        "compared_against": champion["version"] if champion else f"base model {s.base_model_name}",
        "parent_version": champion["version"] if champion else None,
        "device": describe(device),
        "hyperparameters": hyperparameters,
        "snapshot": snapshot.summary(),
        "split": split,
        "metrics": {"before": before, "after": after},
        "reference_metrics": None
        if reference is None
        else {"pairs": len(reference_pairs), "champion": reference[0], "candidate": reference[1]},
        "promoted": decision.promote,
        "gate_reason": decision.reason,
        "training": stats.as_dict(),
        "oom_retries": oom_retries,
        "timings": timings,
        "libraries": _library_versions(),
        "code_commit": _code_commit(),
    }
    with artifacts.staged_version_dir(s.models_dir, version) as folder:
        save_cross_encoder(model, tokenizer, folder, s.max_length)
        artifacts.write_heldout_pairs(folder, test)
        meta["plots"] = write_plots(
            folder,
            label_counts=snapshot.label_counts,
            query_lengths=[len(p.query.split()) for p in snapshot.pairs],
            before=before,
            after=after,
            test_labels=ty,
            scores_before=scores_before,
            scores_after=scores_after,
        )
        lap("write_artifacts")
        meta["timings"] = timings
        (folder / "training_metadata.json").write_text(json.dumps(meta, indent=2, default=str))
        (folder / "training_report.txt").write_text(render_report(meta))

    versions.insert_version(
        db,
        {
            "version": version,
            "job_id": job_id,
            "parent_version": meta["parent_version"],
            "base_model": s.base_model_name,
            "warm_started": start_source != s.base_model_name,
            "snapshot": meta["snapshot"],
            "metrics": {"before": before, "after": after},
            "hyperparameters": hyperparameters,
            "device": meta["device"],
            "gate_reason": decision.reason,
            "artifact_path": artifacts.relative_artifact_path(version),
        },
    )
    if decision.promote:
        versions.promote(db, version)
        artifacts.point_champion(s.models_dir, version)
    else:
        versions.set_status(db, version, versions.REJECTED)
    log.info(
        "job %s → %s (%s): %s",
        job_id,
        version,
        "champion" if decision.promote else "rejected",
        decision.reason,
    )
    return {
        "job_status": jobs.SUCCEEDED if decision.promote else jobs.REJECTED,
        "version": version,
        "promoted": decision.promote,
        "reason": None if decision.promote else decision.reason,
        "gate_reason": decision.reason,
        "metrics": {"before": before, "after": after},
        "batch_size_used": config.batch_size,
        "oom_retries": oom_retries,
        "timings": timings,
        "artifact_path": artifacts.relative_artifact_path(version),
    }


def _train_with_oom_retry(model, tokenizer, train: list[Pair], config: TrainConfig, device, source, report):
    """Halve the batch on CUDA out-of-memory (down to 1), restarting from the untouched start weights."""
    from dataclasses import replace

    queries, documents, labels, _ = _columns(train)
    oom_retries: list[dict[str, int]] = []
    last_report = [0.0]

    def on_step(epoch: int, step: int, total: int, loss: float) -> None:
        if step == total or time.monotonic() - last_report[0] >= PROGRESS_INTERVAL_S:
            last_report[0] = time.monotonic()
            report("train", epoch=epoch, step=step, total_steps=total, loss=round(loss, 5))

    while True:
        try:
            stats = fine_tune(model, tokenizer, queries, documents, labels, config, device=device, on_step=on_step)
            return model, stats, config, oom_retries
        except Exception as exc:
            if not is_out_of_memory(exc) or config.batch_size == 1:
                raise
            smaller = max(1, config.batch_size // 2)
            log.warning("out of memory at batch %d; retrying with %d", config.batch_size, smaller)
            oom_retries.append({"batch_size": config.batch_size, "retry_with": smaller})
            del model
            release_memory(device)
            config = replace(config, batch_size=smaller)
            model, tokenizer = load_cross_encoder(source, device, config.seed)


def _library_versions() -> dict[str, str]:
    names = ("torch", "transformers", "sentence-transformers", "scikit-learn", "celery", "pymongo")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _code_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
