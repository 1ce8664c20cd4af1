"""The stored documents' vocabulary, typed: statuses, feedback labels and the gate's evidence.

Every layer reads these (the store writes them, the pipeline builds the evidence, the producer and the
CLI read both), so this module imports nothing of the project. The statuses are `StrEnum`s whose values
are the strings stored in MongoDB: a member equals its string, is encoded as that string by pymongo
and by JSON, and documents written before the enums read back the same.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TypedDict

# The API's feedback values and their labels; anything else in `feedback` is malformed.
LABELS: dict[str, float] = {"like": 1.0, "dislike": 0.0}


class JobStatus(StrEnum):
    """`training_jobs.status`: waiting → queued → running → one of the four terminal ones."""

    WAITING = "waiting"  # a manual job behind the active one; not sent yet
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # a version was registered and promoted
    FAILED = "failed"
    REJECTED = "rejected"  # a version was registered and the gate (or a changed champion) kept it out
    CANCELLED = "cancelled"


class VersionStatus(StrEnum):
    """`model_versions.status`, kept in step with the champion record."""

    CANDIDATE = "candidate"  # registered, not (yet) decided
    CHAMPION = "champion"
    REJECTED = "rejected"
    RETIRED = "retired"  # replaced by a newer champion
    ROLLED_BACK = "rolled_back"


class IntervalDoc(TypedDict):
    """The change B − A of one metric with its bootstrap interval (`bootstrap.Interval.as_dict`)."""

    metric: str
    delta: float | None
    low: float | None
    high: float | None
    confidence: float
    samples: int


class JudgedIntervalDoc(IntervalDoc):
    """An interval on a part of the pairs (a slice, the champion's frozen pairs), with its size."""

    pairs: int
    queries: int


class GateEvidence(TypedDict, total=False):
    """What the gate decided on (`GateDecision.evidence`), stored as `model_versions.gate` with the
    decision's `promote` and `refused`. The intervals are stored here only."""

    heldout_pairs: int
    heldout_queries: int
    rule: dict[str, float | int]
    fairness: dict[str, object]  # what was left out and why (worker/stages.py)
    intervals: dict[str, IntervalDoc]  # per bootstrapped metric, on the held-out pairs
    reference: JudgedIntervalDoc  # the primary metric on the champion's frozen held-out pairs
    slices: dict[str, JudgedIntervalDoc]  # the primary metric per judged slice (Bonferroni-corrected)


class StoredGate(GateEvidence, total=False):
    """`model_versions.gate`: the evidence, and what the gate made of it."""

    promote: bool
    refused: bool  # too little evidence to decide either way


class RegisteredVersion(TypedDict):
    """What a job registers of a version in `model_versions` (worker/metadata.py builds it); the store
    adds `status`, `created_at` and `history`, and later switches add their own fields
    (docs/collections.md)."""

    version: str
    job_id: str
    parent_version: str | None  # the champion it was judged against (None: the base model)
    base_model: str
    warm_started: bool
    snapshot: dict[str, object]  # `Snapshot.summary()`
    metrics: dict[str, object]  # `before`, `after`: each `evaluation.compute_metrics` of one model
    gate: StoredGate
    hyperparameters: dict[str, object]
    device: str
    gate_reason: str
    artifact_path: str  # relative to MODELS_DIR
    split: dict[str, object]


class VersionEvent(TypedDict, total=False):
    """One entry of a version's `history`: a status change, or its folder pruned (`artifacts`)."""

    status: VersionStatus
    artifacts: str
    at: datetime
    by: str  # a job, `cli`, the producer, retention
    reason: str
    forced: bool | None
