"""Refresh live metrics of the champion and its holdback, and roll back a champion users like less."""

from __future__ import annotations

import logging
from typing import Any

from eduranker import champion
from eduranker.errors import EduRankerError
from eduranker.settings import Settings
from eduranker.store import versions
from eduranker.store.online import live_counts, store_online
from eduranker.store.types import Db
from producer.guard import GuardDecision, LiveRate, judge

log = logging.getLogger(__name__)


def _summary(counts: dict[str, Any], confidence: float) -> dict[str, Any]:
    rate = LiveRate(counts["version"], counts["feedback"], counts["likes"])
    interval = rate.wilson(confidence)
    return {**counts, "like_rate": rate.rate, "like_rate_interval": list(interval) if interval else None}


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
    decision = judge(
        LiveRate(record.version, mine["feedback"], mine["likes"]),
        LiveRate(record.previous, theirs["feedback"], theirs["likes"]) if theirs else None,
        min_feedback=settings.online_guard_min_feedback,
        confidence=conf,
    )
    online = {**_summary(mine, conf), "holdback": _summary(theirs, conf) if theirs else None, "guard": decision.reason}
    store_online(db, record.version, online)
    if theirs is not None and record.previous is not None:
        store_online(db, record.previous, {**_summary(theirs, conf), "as_holdback_of": record.version})
    if decision.rollback and settings.online_guard:
        _roll_back(db, settings, record.version, decision)
    return decision


def _roll_back(db: Db, settings: Settings, version: str, decision: GuardDecision) -> None:
    try:
        demoted, restored = champion.rollback(db, settings.models_dir, by="online guard", reason=decision.reason)
    except EduRankerError as exc:  # the champion changed meanwhile, or the holdback's folder is gone
        log.warning("online guard wanted to roll back %s but could not: %s", version, exc)
        return
    versions.mark_guard_rolled_back(db, demoted)
    log.warning("online guard rolled back %s to %s: %s", demoted, restored, decision.reason)
