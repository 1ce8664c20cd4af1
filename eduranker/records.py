"""The stored documents' vocabulary, typed: statuses, feedback labels, the job and the gate's evidence.

Every layer reads these (the store writes them, the pipeline builds the evidence, the producer and the
CLI read both), so this module imports nothing of the project. The statuses are `StrEnum`s whose values
are the strings stored in MongoDB: a member equals its string, is encoded as that string by pymongo
and by JSON, and documents written before the enums read back the same.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Required, TypedDict

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


class TriggerDoc(TypedDict, total=False):
    """`training_jobs.trigger`: why the job was asked for, by whom, and (the producer's) on what feedback."""

    reason: str
    source: str  # "producer", "task", "request_training", "cli"
    watermark: datetime  # the newest feedback counted when the producer recorded it
    counts: dict[str, int]  # like, dislike


class SnapshotSummary(TypedDict, total=False):
    """What a job's snapshot was made of (`Snapshot.summary()`, with the read's and caps' reports added by
    worker/stages.py): `training_jobs.snapshot` and `model_versions.snapshot`."""

    rows_seen: int  # reactions of this index read
    pairs: int
    label_counts: dict[str, int]
    skipped: dict[str, int]  # malformed rows by kind
    skipped_total: int
    duplicates_superseded: int
    texts_truncated: int
    future_dated: int
    content_hash: str
    watermark: datetime | None  # the newest feedback it holds
    capped: dict[str, int]
    read: dict[str, Any]
    seconds: float


class SplitSummary(TypedDict, total=False):
    """The stable split a job used (`Split.summary()` and the lineage): `.split` of jobs and versions."""

    train: int
    test: int
    test_queries: int
    epoch: int
    test_fraction: float
    key_fingerprint: str
    query_key_version: int
    lineage: list[int]


class JobDoc(TypedDict, total=False):
    """A `training_jobs` document as the store reads it (docs/collections.md): the store's reads return
    it, so a misspelt field is a type error, not a silent None. Fields appear as the job goes on; a
    document written by an older release may lack any but the first few."""

    _id: str
    status: JobStatus
    active: bool  # present (true) only while queued or running: the one-active-job index
    automatic: bool
    trigger: TriggerDoc
    overrides: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None  # the outbox: None until the broker took the message
    sends: int
    resent_at: datetime
    no_worker_since: datetime
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime
    attempts: int  # claims: the fence of the run that owns it
    handed_back: int
    worker: str
    device: str  # what trained it, e.g. "cpu (2 threads)"
    progress: dict[str, Any]  # stage, epoch, step, total_steps, loss
    snapshot: SnapshotSummary
    split: SplitSummary
    train_cap: dict[str, Any]
    metrics: dict[str, Any]  # before, after
    gate_refused: bool
    version: str
    challenger: bool  # the version passed the screen and became the challenger (users decide)
    artifact_path: str
    promoted: bool
    gate_reason: str
    reason: str | None  # why it failed, was rejected, waits or was requeued
    batch_size_used: int
    oom_retries: list[dict[str, int]]
    timings: dict[str, float]
    stopped_run: dict[str, Any]  # a run cancelled mid-training: where it stopped
    gate: dict[str, Any]  # jobs from older releases copied the gate's intervals here


class VersionStatus(StrEnum):
    """`model_versions.status`, kept in step with the champion record."""

    CANDIDATE = "candidate"  # registered, not (yet) decided
    CHAMPION = "champion"
    REJECTED = "rejected"
    RETIRED = "retired"  # replaced by a newer champion
    ROLLED_BACK = "rolled_back"
    CHALLENGER = "challenger"  # passed the offline screen; served interleaved with the champion until users decide


class ChallengeOutcome(StrEnum):
    """How a challenge ended (`model_versions.challenge.outcome`)."""

    PROMOTED = "promoted"  # users preferred the challenger: the always-valid interval lies above zero
    REJECTED = "rejected"  # users preferred the champion: the interval lies below zero
    CAPPED = "capped"  # no decision within CHALLENGE_MAX_IMPRESSIONS or CHALLENGE_MAX_DAYS: the champion stays
    REPLACED = "replaced"  # a newer candidate passed the screen and took its place
    VOID = "void"  # the champion changed meanwhile (by hand, or a rollback): what it was compared with is gone
    BY_HAND = "by_hand"  # an operator promoted or rejected it (`eduranker promote` / `eduranker reject`)
    OFFLINE = "offline"  # no interleaved search was served: decided by the offline gate (the fallback)


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
    worse: bool  # significantly worse somewhere: the screen keeps it from users


class RegisteredVersion(TypedDict):
    """What a job registers of a version in `model_versions` (worker/metadata.py builds it); the store
    adds `status`, `created_at` and `history`, and later switches add their own fields
    (docs/collections.md)."""

    version: str
    job_id: str
    parent_version: str | None  # the champion it was judged against (None: the base model)
    base_model: str
    warm_started: bool
    snapshot: SnapshotSummary
    metrics: dict[str, Any]  # `before`, `after`: each `evaluation.compute_metrics` of one model
    gate: StoredGate
    hyperparameters: dict[str, Any]
    device: str
    gate_reason: str
    artifact_path: str  # relative to MODELS_DIR
    split: SplitSummary


class VersionEvent(TypedDict, total=False):
    """One entry of a version's `history`: a status change, or its folder pruned (`artifacts`)."""

    status: VersionStatus
    artifacts: str
    at: datetime
    by: str  # a job, `cli`, the producer, retention
    reason: str
    forced: bool | None


class VersionDoc(TypedDict, total=False):
    """A `model_versions` document as the store reads it. Only `version` is sure to be there: a document
    registered by an older release lacks the fields added since, so readers take them with `.get`.
    The first block is what a job registers (`RegisteredVersion`; tests/test_records.py keeps the two in
    step), the second what the store and later switches add."""

    version: Required[str]
    job_id: str
    parent_version: str | None
    base_model: str
    warm_started: bool
    snapshot: SnapshotSummary
    metrics: dict[str, Any]
    gate: StoredGate
    hyperparameters: dict[str, Any]
    device: str
    gate_reason: str
    artifact_path: str
    split: SplitSummary

    status: VersionStatus
    created_at: datetime
    history: list[VersionEvent]
    promoted_at: datetime  # the newest promotion: live figures count from it
    retired_at: datetime
    previous_champion: str | None
    forced: bool  # promoted over the gate's rejection
    rollback_reason: str
    online: dict[str, Any]  # live figures since its promotion, refreshed by the producer
    guard_decision: dict[str, Any]  # the online guard's newest decision, and all of them
    guard_decisions: list[dict[str, Any]]
    guard_rolled_back: bool
    artifacts: str  # "pruned": the folder was removed by retention; the document stays
    pruned_at: datetime
    challenge: dict[str, Any]  # its challenge: against, started_at, figures, and once ended outcome, reason
