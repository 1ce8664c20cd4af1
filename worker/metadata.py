"""A version's metadata, built once: written to `training_metadata.json`, and the registry's record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, cast

from eduranker.models_dir import relative_artifact_path
from eduranker.pipeline.encoding import QUERY_TOKENS
from eduranker.pipeline.gate import GateDecision
from eduranker.pipeline.pairs import Snapshot
from eduranker.records import RegisteredVersion
from eduranker.settings import Settings
from worker.stages import Baseline, Candidate, Judged, Split

# The metadata's fields the registry keeps: those `RegisteredVersion` declares (the shape defined once).
REGISTRY_FIELDS = tuple(RegisteredVersion.__annotations__)


def build(
    version: str,
    job_id: str,
    s: Settings,
    snapshot: Snapshot,
    split: Split,
    baseline: Baseline,
    judged: Judged,
    candidate: Candidate,
    decision: GateDecision,
    *,
    device: str,
    threads: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    config = candidate.config
    return {
        "version": version,
        "job_id": job_id,
        "base_model": s.base_model_name,
        # The hub commit it was loaded at (none for a local folder): a retrain starts from the same weights.
        "base_model_revision": None if os.path.isdir(s.base_model_name) else (s.base_model_revision or None),
        "started_from": candidate.started_from,
        "warm_started": candidate.started_from != s.base_model_name,
        "compared_against": baseline.champion_version or f"base model {s.base_model_name}",
        "parent_version": baseline.champion_version,
        "device": device,
        "hyperparameters": {
            "num_epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "head_learning_rate": config.head_learning_rate,
            "max_length": config.max_length,
            "query_tokens": QUERY_TOKENS,
            "freeze_embeddings": config.freeze_embeddings,
            "precision": candidate.stats.precision,
            "seed": config.seed,
            "test_fraction": s.test_fraction,
            "warm_start": s.warm_start,
            "torch_threads": threads,
        },
        "snapshot": snapshot.summary(),
        "split": {**split.summary(), "lineage": lineage(split, baseline, candidate, s)},
        # The gate's intervals are stored once, in `gate.intervals` (with the evidence they belong to).
        "metrics": {"before": baseline.metrics, "after": judged.metrics},
        "gate": {
            **decision.evidence,
            "promote": decision.promote,
            "refused": decision.refused,
            "worse": decision.worse,
        },
        "promoted": decision.promote,
        "gate_reason": decision.reason,
        "training": candidate.stats.as_dict(),
        "oom_retries": candidate.oom_retries,
        "timings": timings,
        "libraries": library_versions(),
        "code_commit": code_commit(),
        "artifact_path": relative_artifact_path(version),
    }


def lineage(split: Split, baseline: Baseline, candidate: Candidate, s: Settings) -> list[int | None]:
    """The split epochs this version trained under: its own, and its parent's when warm-started from it
    (None: an ancestor from before stable splits, whose training queries are unknown)."""
    inherited = baseline.lineage if candidate.started_from != s.base_model_name else []
    epochs = [split.key.epoch, *(key.epoch if key else None for key in inherited)]
    return list(dict.fromkeys(epochs))


def registry_doc(meta: dict[str, Any]) -> RegisteredVersion:
    return cast(RegisteredVersion, {name: meta[name] for name in REGISTRY_FIELDS})


def write(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "training_metadata.json").write_text(json.dumps(meta, indent=2, default=str))


def library_versions() -> dict[str, str]:
    names = ("torch", "transformers", "sentence-transformers", "numpy", "celery", "pymongo")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def code_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
