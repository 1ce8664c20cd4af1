"""Refresh live metrics of the champion and the version it is compared with, and roll back a champion
users like less (the always-valid sequential test of `producer.guard`, through the safe switch).

The comparison is kept as running sums (`producer/live_comparison.py`): a refresh costs the feedback
that changed since the last one. A rollback applies only to the champion record the guard judged (its
`seq`, so the two versions compared) and only under the lease term it was judged in; a record switched
since, or a lease that moved on, drops the decision (logged, counted in `producer_state`) and the next
refresh judges afresh."""

from __future__ import annotations

import logging
from typing import Any

from bson import ObjectId

from eduranker import champion
from eduranker.errors import ChampionChanged, EduRankerError
from eduranker.settings import Settings
from eduranker.store import comparison_sums, versions
from eduranker.store.lease import LeaseFence, LeaseLapsed
from eduranker.store.online import ImpressionRow, live_counts, note_dropped, record_guard_decision, store_online
from eduranker.store.types import Db
from producer.comparison import from_sums
from producer.guard import GuardDecision, Impression, LiveRate, compare, judge
from producer.live_comparison import LeaseCheck, refresh_sums

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


def _counts(version: str, since: Any, totals: dict[str, int], side: str) -> dict[str, Any]:
    """A version's live counts, from the comparison's running totals (`side`: "1" or "2")."""
    likes, feedback, served = (totals.get(f"{name}{side}_{what}", 0) for name, what in (("t", "likes"), ("t", "fb"),
                                                                                          ("s", "served")))  # fmt: skip
    return {"version": version, "since": since, "served": served, "feedback": feedback, "likes": likes}


def refresh_online(db: Db, settings: Settings, lease: LeaseCheck | None = None) -> GuardDecision | None:
    """Live figures since the champion's promotion, stored on both versions; the guard's decision.
    `lease`: renews the producer's lease and returns its fence (None: unfenced, a single process)."""
    record = versions.read_champion(db)
    if record.version is None:
        return None
    doc = versions.get_version(db, record.version)
    since = doc.get("promoted_at") or doc["created_at"]
    conf = settings.online_guard_confidence
    if record.previous is None:
        mine, theirs, sums = live_counts(db, record.version, since), None, None
        comparison = compare([], record.version, None)
    else:
        sums = refresh_sums(db, record.version, record.previous, since, impression_of, lease=lease)
        if sums.rebuilt:
            comparison_sums.forget_comparisons(db, "guard", keep=sums.key)
        mine = _counts(record.version, since, sums.totals, "1")
        theirs = _counts(record.previous, since, sums.totals, "2")
        comparison = from_sums(sums.clusters, record.version, record.previous)
    decision = judge(comparison, min_feedback=settings.online_guard_min_feedback, confidence=conf)
    fence = lease() if lease is not None else None  # the term this decision is made under
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
    if decision.rollback and settings.online_guard and sums is not None:
        _roll_back(db, settings, record, decision, fence)
    return decision


def _roll_back(
    db: Db, settings: Settings, record: versions.ChampionRecord, decision: GuardDecision,
    fence: LeaseFence | None,
) -> None:  # fmt: skip
    """Switch back from exactly the record judged, under the lease term it was judged in."""
    judged = f"{record.version} vs {record.previous} (record seq {record.seq})"
    try:
        demoted, restored = champion.rollback(
            db, settings.models_dir, by=GUARD, reason=decision.reason, seen=record, fence=fence
        )
    except (ChampionChanged, LeaseLapsed) as exc:
        log.warning("online guard dropped its rollback decision on %s: %s", judged, exc)
        note_dropped(db, f"{judged}: {exc}")
        return
    except EduRankerError as exc:  # the previous version's folder is gone, or nothing to roll back to
        log.warning("online guard wanted to roll back %s but could not: %s", judged, exc)
        return
    # The switch succeeded on the record judged: the demoted version is the one judged.
    versions.mark_guard_rolled_back(db, demoted)
    record_guard_decision(db, demoted, {**decision.figures, "reason": decision.reason, "restored": restored})
    log.warning("online guard rolled back %s to %s: %s", demoted, restored, decision.reason)
