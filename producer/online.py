"""Refresh live metrics of the champion and the version it is compared with, and roll back a champion
users like less (the always-valid sequential test of `producer.guard`, through the safe switch)."""

from __future__ import annotations

import logging
from typing import Any

from bson import ObjectId

from eduranker import champion
from eduranker.errors import EduRankerError
from eduranker.settings import Settings
from eduranker.store import versions
from eduranker.store.online import ImpressionRow, impressions, live_counts, record_guard_decision, store_online
from eduranker.store.types import Db
from producer.guard import GuardDecision, Impression, LiveRate, compare, judge

log = logging.getLogger(__name__)
GUARD = "online guard"


def _summary(counts: dict[str, Any], confidence: float) -> dict[str, Any]:
    rate = LiveRate(counts["version"], counts["feedback"], counts["likes"])
    interval = rate.wilson(confidence)
    return {**counts, "like_rate": rate.rate, "like_rate_interval": list(interval) if interval else None}


def cluster_key(row: ImpressionRow) -> str:
    """The cluster a search counts in. One user's reactions are correlated, so a user is one cluster.
    Anonymous searches are grouped by the hour they were made in (the search's ObjectId time): one
    anonymous visitor's searches mostly fall in one hour, and a flood of anonymous searches is one or a
    few clusters, so it can neither pass for many independent users nor reach MIN_CLUSTERS cheaply."""
    if row.user_id is not None:
        return f"user:{row.user_id}"
    if isinstance(row.query_id, ObjectId):
        return f"anonymous:{row.query_id.generation_time:%Y-%m-%dT%H}"
    return f"impression:{row.query_id}"


def impression_of(row: ImpressionRow) -> Impression:
    return Impression(cluster_key(row), frozenset(row.served), dict(row.likes), dict(row.dislikes))


def refresh_online(db: Db, settings: Settings) -> GuardDecision | None:
    """Live figures since the champion's promotion, stored on both versions; the guard's decision."""
    record = versions.read_champion(db)
    if record.version is None:
        return None
    doc = versions.get_version(db, record.version)
    since = doc.get("promoted_at") or doc["created_at"]
    mine = live_counts(db, record.version, since)
    theirs = live_counts(db, record.previous, since) if record.previous else None
    conf = settings.online_guard_confidence
    rows = impressions(db, [record.version, record.previous], since) if record.previous else []
    comparison = compare([impression_of(r) for r in rows], record.version, record.previous)
    decision = judge(comparison, min_feedback=settings.online_guard_min_feedback, confidence=conf)
    online = {
        **_summary(mine, conf),
        "holdback": _summary(theirs, conf) if theirs else None,
        "holdback_salt": record.version,  # the serving side salts its holdback hash with the champion's name
        "comparison": decision.figures,
        "guard": decision.reason,
    }
    store_online(db, record.version, online)
    if theirs is not None and record.previous is not None:
        store_online(db, record.previous, {**_summary(theirs, conf), "as_holdback_of": record.version})
    if decision.rollback and settings.online_guard:
        _roll_back(db, settings, record.version, decision)
    return decision


def _roll_back(db: Db, settings: Settings, version: str, decision: GuardDecision) -> None:
    try:
        demoted, restored = champion.rollback(db, settings.models_dir, by=GUARD, reason=decision.reason)
    except EduRankerError as exc:  # the champion changed meanwhile, or the previous version's folder is gone
        log.warning("online guard wanted to roll back %s but could not: %s", version, exc)
        return
    versions.mark_guard_rolled_back(db, demoted)
    record_guard_decision(db, demoted, {**decision.figures, "reason": decision.reason, "restored": restored})
    log.warning("online guard rolled back %s to %s: %s", demoted, restored, decision.reason)
