"""The producer's Prometheus metrics: read from the database and the models volume on a tick, served
from that cache (producer/metrics_http.py), so a scrape costs the database nothing and a restarted
producer reports the truth at its first refresh. docs/alerts.md lists every metric and alert.

A refresh is a fixed number of commands (about twenty: `eduranker_metrics_refresh_commands` shows the
last one's), whatever the data's size or the scrape rate; bench/metrics_cost.py measures it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eduranker import models_dir
from eduranker.records import ChallengeOutcome
from eduranker.settings import Settings
from eduranker.store import jobs, monitoring
from eduranker.store.clock import server_now
from eduranker.store.connection import CommandCounter
from eduranker.store.feedback import count_labels
from eduranker.store.types import Db, for_index
from producer.history import read_history
from producer.policy import is_first_model
from producer.state import load_state
from producer.trigger import read_counts

log = logging.getLogger(__name__)

# Seconds: a stage takes from a second (a small snapshot) to an hour (TASK_TIME_LIMIT's default).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
RECENT_VERSIONS = 20  # versions whose offline metrics and intervals are exported (the dashboard's span)
OFFLINE_METRICS = ("roc_auc", "ndcg@10", "mrr", "f1")
JOB_STATUSES = (jobs.WAITING, *jobs.ACTIVE, *jobs.TERMINAL)


@dataclass
class Reading:
    """What one refresh read; the exported families are a pure function of it (`families`)."""

    at: datetime  # the database server's now
    feedback: dict[str, int] = field(default_factory=dict)
    since_last_job: int = 0
    threshold: int = 0
    jobs: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    failures_in_a_row: int = 0
    # Per stage: (jobs, seconds in all, jobs at most each of DURATION_BUCKETS), cumulative.
    durations: dict[str, tuple[int, float, list[int]]] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    lease: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    versions: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: int = 0
    challenges: dict[str, int] = field(default_factory=dict)  # ended challenges by outcome
    pointer: str | None = None
    disk: tuple[int, int] | None = None  # (free bytes, size bytes) of the models volume
    workers: int | None = None  # None: the broker did not answer


def read(db: Db, settings: Settings, workers: Callable[[], int | None] | None = None) -> Reading:
    """One refresh: a fixed set of reads (none repeated per job, version or event)."""
    at = server_now(db)
    history = read_history(db, settings.auto_retry_limit)
    window = read_counts(db, history, until=at)
    champion = monitoring.champion_document(db)
    found = monitoring.recent_versions(db, RECENT_VERSIONS, also=champion.get("version"))
    reading = Reading(
        at=at,
        feedback=count_labels(db, until=at),
        since_last_job=window.total,
        threshold=settings.train_min_feedback if is_first_model(history) else settings.train_new_feedback,
        jobs=monitoring.job_statuses(db),
        failures_in_a_row=monitoring.failures_in_a_row(db),
        durations=monitoring.stage_histogram(db, DURATION_BUCKETS),
        champion=champion,
        lease=monitoring.lease_document(db),
        state=load_state(db),
        versions=found,
        rollbacks=monitoring.guard_rollbacks(db),
        challenges=monitoring.challenge_outcomes(db),
    )
    reading.pointer, reading.disk = read_volume(settings.models_dir)
    reading.workers = workers() if workers is not None else None
    return reading


def read_volume(root: str) -> tuple[str | None, tuple[int, int] | None]:
    """The champion pointer's target and the volume's (free, size) bytes; None where unreadable."""
    try:
        pointer = models_dir.champion_target(root)
    except OSError:
        pointer = None
    try:
        st = os.statvfs(root)
        disk = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
    except OSError:
        disk = None
    return pointer, disk


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=None if value is not None else list(labels))


def families(r: Reading, holder: str) -> list[Metric]:
    """The metrics of one reading, as this producer (`holder`, its lease name) exports them."""
    return [
        *_feedback_families(r),
        *_job_families(r),
        *_champion_families(r),
        *_producer_families(r, holder),
        *_online_families(r),
        *_challenge_families(r),
        *_volume_families(r),
    ]


def _feedback_families(r: Reading) -> Iterator[Metric]:
    total = CounterMetricFamily("eduranker_feedback", "Usable feedback in inferences, by label.", labels=["label"])
    for label in ("like", "dislike"):
        total.add_metric([label], r.feedback.get(label, 0))
    yield total
    yield _gauge("eduranker_feedback_since_last_job", "Usable feedback in the trigger window.", r.since_last_job)
    yield _gauge("eduranker_feedback_threshold", "Feedback in the window that triggers the next job.", r.threshold)


def _job_families(r: Reading) -> Iterator[Metric]:
    count = _gauge("eduranker_jobs", "Training jobs by status.", labels=["status"])
    last = _gauge("eduranker_job_last_finished_timestamp_seconds", "When the newest job of a status ended.",
                  labels=["status"])  # fmt: skip
    # Every status is exported, 0 when no job has it: a series that vanished would read as "no data".
    known: dict[str, tuple[int, datetime | None]] = {status: (0, None) for status in JOB_STATUSES}
    for status, (n, finished) in sorted({**known, **r.jobs}.items()):
        count.add_metric([status], n)
        if finished is not None:
            last.add_metric([status], finished.timestamp())
    yield count
    yield last
    yield _gauge("eduranker_job_failures_in_a_row", "Failed jobs since the last that did not fail.",
                 r.failures_in_a_row)  # fmt: skip
    yield _duration_histogram(r.durations)


def _duration_histogram(durations: dict[str, tuple[int, float, list[int]]]) -> HistogramMetricFamily:
    hist = HistogramMetricFamily("eduranker_job_duration_seconds", "Seconds per stage of finished jobs "
                                 "(stage total: the whole job).", labels=["stage"])  # fmt: skip
    for stage, (count, seconds, at_most) in sorted(durations.items()):
        buckets = [(f"{b:g}", float(n)) for b, n in zip(DURATION_BUCKETS, at_most, strict=True)]
        buckets.append(("+Inf", float(count)))
        hist.add_metric([stage], buckets, sum_value=seconds)
    return hist


def _champion_families(r: Reading) -> Iterator[Metric]:
    info = _gauge("eduranker_champion_info", "The champion the registry names (1).", labels=["version"])
    version = r.champion.get("version")
    if version:
        info.add_metric([version], 1)
    yield info
    switched = monitoring.as_timestamp(r.champion.get("switched_at"))
    if switched is not None:
        yield _gauge("eduranker_champion_switched_timestamp_seconds", "When the champion last changed.", switched)
    # The pointer follows the registry (reconciled every second): a lasting mismatch is a broken duty.
    mismatch = float((r.pointer or None) != (version or None))
    yield _gauge("eduranker_champion_pointer_mismatch", "1 while models/champion disagrees with the registry.",
                 mismatch)  # fmt: skip
    yield CounterMetricFamily("eduranker_guard_rollbacks", "Champions the online guard rolled back.", r.rollbacks)
    metric = _gauge("eduranker_version_offline_metric", "A version's held-out metric.", labels=["version", "metric"])
    gain = _gauge("eduranker_version_gain", "A version's gain over the champion it was judged against, with its "
                  "interval (bound: delta, low, high).", labels=["version", "metric", "bound"])  # fmt: skip
    for doc in r.versions:
        after = (doc.get("metrics") or {}).get("after") or {}
        for name in OFFLINE_METRICS:
            if isinstance(after.get(name), int | float):
                metric.add_metric([doc["version"], name], float(after[name]))
        for name, interval in ((doc.get("gate") or {}).get("intervals") or {}).items():
            for bound in ("delta", "low", "high"):
                if isinstance((interval or {}).get(bound), int | float):
                    gain.add_metric([doc["version"], name, bound], float(interval[bound]))
    yield metric
    yield gain


def lease_live(r: Reading) -> bool:
    expires = monitoring.as_timestamp(r.lease.get("expires_at"))
    return expires is not None and expires > r.at.timestamp()  # both the server's clock


def leader_elsewhere(r: Reading, holder: str) -> bool:
    return lease_live(r) and r.lease.get("holder") != holder


def _producer_families(r: Reading, holder: str) -> Iterator[Metric]:
    live = lease_live(r)
    leads = live and r.lease.get("holder") == holder
    yield _gauge("eduranker_producer_leader", "1 when this producer holds the lease.", float(leads))
    yield _gauge("eduranker_producer_lease_held", "1 when some producer holds an unexpired lease.", float(live))
    info = _gauge("eduranker_producer_info", "This producer (1).", labels=["holder", "role"])
    info.add_metric([holder, "leader" if leads else "standby"], 1)
    yield info
    evaluated = monitoring.as_timestamp(r.state.get("evaluated_at"))
    if evaluated is not None:
        yield _gauge("eduranker_producer_lag_seconds", "Seconds since the leader last evaluated the feedback "
                     "(server clock).", max(0.0, r.at.timestamp() - evaluated))  # fmt: skip
    errors = CounterMetricFamily("eduranker_housekeeping_errors", "Failures of each housekeeping duty (since "
                                 "the leader started).", labels=["step"])  # fmt: skip
    failing = _gauge("eduranker_housekeeping_failing", "1 while a duty's last run failed.", labels=["step"])
    for step, entry in sorted((r.state.get("duties") or {}).items()):
        errors.add_metric([step], float(entry.get("failures_total") or 0))
        failing.add_metric([step], float(bool(entry.get("failures"))))
    yield errors
    yield failing
    if r.workers is not None:
        yield _gauge("eduranker_workers_alive", "Celery workers that answered a ping.", r.workers)


def _online_families(r: Reading) -> Iterator[Metric]:
    served = CounterMetricFamily("eduranker_online_feedback", "Live feedback on results of a version since the "
                                 "champion's promotion, by arm.", labels=["version", "arm"])  # fmt: skip
    likes = CounterMetricFamily("eduranker_online_likes", "Live likes on results of a version since the "
                                "champion's promotion, by arm.", labels=["version", "arm"])  # fmt: skip
    champion = r.champion.get("version")
    for doc in r.versions:
        online = doc.get("online") or {}
        if doc["version"] != champion or not online:
            continue
        for arm, figures in (("champion", online), ("previous", online.get("holdback"))):
            if figures:
                labels = [str(figures.get("version") or "base"), arm]
                served.add_metric(labels, float(figures.get("feedback") or 0))
                likes.add_metric(labels, float(figures.get("likes") or 0))
    yield served
    yield likes


def _challenge_families(r: Reading) -> Iterator[Metric]:
    running = r.champion.get("challenge") or {}
    info = _gauge("eduranker_challenge_info", "The running challenge (1): its challenger and the champion it "
                  "is compared with.", labels=["challenger", "champion"])  # fmt: skip
    bounds = _gauge("eduranker_challenge_credit", "The running challenge's mean interleaving credit (the "
                    "challenger's) with its always-valid interval (bound: estimate, low, high).",
                    labels=["challenger", "bound"])  # fmt: skip
    challenger = running.get("version")
    if challenger:
        info.add_metric([challenger, running.get("against") or "base"], 1)
        doc = next((d for d in r.versions if d.get("version") == challenger), {})
        figures = (doc.get("challenge") or {}).get("figures") or {}
        for bound in ("estimate", "low", "high"):
            if isinstance(figures.get(bound), int | float):
                bounds.add_metric([challenger, bound], float(figures[bound]))
    yield info
    yield bounds
    ended = CounterMetricFamily("eduranker_challenges", "Ended challenges, by outcome.", labels=["outcome"])
    for outcome in ChallengeOutcome:
        ended.add_metric([str(outcome)], float(r.challenges.get(outcome, 0)))
    yield ended


def _volume_families(r: Reading) -> Iterator[Metric]:
    if r.disk is not None:
        yield _gauge("eduranker_models_dir_free_bytes", "Free bytes on the models volume.", r.disk[0])
        yield _gauge("eduranker_models_dir_size_bytes", "Size of the models volume in bytes.", r.disk[1])


def labelled(per_index: list[tuple[str, list[Metric]]]) -> list[Metric]:
    """One family per name, its samples from every index, each labelled `index` with its index's name."""
    merged: dict[str, Metric] = {}
    for index, found in per_index:
        for family in found:
            out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            out.samples += [sample._replace(labels={**sample.labels, "index": index}) for sample in family.samples]
    return list(merged.values())


class MetricsCache(Collector):
    """The last reading's families, served to every scrape; refreshed by `refresh` on a tick."""

    def __init__(self, db: Db, settings: Settings, holder: str, *, commands: CommandCounter | None = None,
                 workers: Callable[[], int | None] | None = None):  # fmt: skip
        self.db, self.settings, self.holder, self.workers = db, settings, holder, workers
        self.indexes = settings.each_index()  # each read from its own records, labelled with its name
        self.commands = commands or CommandCounter()
        self.lock = threading.Lock()
        self.cached: list[Metric] = []
        self.reached_at = 0.0  # monotonic: the last refresh that reached the database; 0 = none yet
        self.last_ok = False
        self.standing_by = False  # another producer held a live lease at the last refresh
        self.refreshes = 0
        self.errors = 0
        self.last_commands = 0

    def refresh(self) -> bool:
        """Read everything once; on a database error the last figures stay and `database_up` says 0."""
        before = self.commands.total
        fresh: list[Metric] | None = None
        try:
            readings = [(s.index, read(for_index(self.db, s.index_spec), s, self.workers)) for s in self.indexes]
            fresh = labelled([(index, families(reading, self.holder)) for index, reading in readings])
            self.standing_by = any(leader_elsewhere(reading, self.holder) for _, reading in readings)
        except Exception:  # contained: the endpoint keeps serving and says the database is down
            log.warning("metrics refresh failed", exc_info=self.errors == 0)
        with self.lock:
            self.refreshes += 1
            self.last_commands = self.commands.total - before
            self.last_ok = fresh is not None
            if fresh is not None:
                self.cached, self.reached_at = fresh, time.monotonic()
            else:
                self.errors += 1
        return self.last_ok

    def database_reachable(self, within_s: float) -> bool:
        """Whether a refresh reached the database within the last `within_s` seconds."""
        with self.lock:
            return self.reached_at > 0 and time.monotonic() - self.reached_at <= within_s

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            cached, up = list(self.cached), self.last_ok
            own = (self.refreshes, self.errors, self.last_commands)
        yield from cached
        yield _gauge("eduranker_database_up", "1 when the last refresh reached the database.", float(up))
        yield CounterMetricFamily("eduranker_metrics_refreshes", "Refreshes of these metrics.", own[0])
        yield CounterMetricFamily("eduranker_metrics_refresh_errors", "Refreshes that failed.", own[1])
        yield _gauge("eduranker_metrics_refresh_commands", "Database commands the last refresh sent.", own[2])

    def run(self, stop: threading.Event) -> None:
        """Refresh every METRICS_REFRESH_SECONDS until `stop`."""
        while not stop.is_set():
            self.refresh()
            stop.wait(self.settings.metrics_refresh_seconds)
