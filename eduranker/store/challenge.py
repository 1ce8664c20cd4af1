"""The running challenge: a screened candidate served interleaved with the champion until users decide.

At most one challenge runs, and it lives in the champion record itself (`champion`, `_id: "current"`,
field `challenge`): so starting one, and ending one by a promotion, is one conditional write on the same
document as every champion switch. Each write is conditioned on the exact state that was judged: the
record's `seq` (no champion switch since) and the challenge's `id` (the same challenge, not a newer
one), so a decision made on stale figures changes nothing. The challenger's `model_versions` document
keeps the challenge's figures and, once it ends, its outcome and reason (`challenge`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eduranker.errors import ChampionChanged
from eduranker.records import ChallengeOutcome, VersionStatus
from eduranker.store import versions
from eduranker.store.clock import server_now
from eduranker.store.connection import CHAMPION_RECORD, INFERENCES, MODEL_VERSIONS
from eduranker.store.lease import LeaseFence, fenced
from eduranker.store.types import Db

RECORD_ID = versions.RECORD_ID


@dataclass(frozen=True)
class Challenge:
    id: str
    version: str  # the challenger
    against: str | None  # the champion it is compared with (None: the base model)
    started_at: datetime  # server time
    seq: int  # the champion record's seq when it started: a switch since makes the challenge void

    def as_doc(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "against": self.against, "started_at": self.started_at,
                "seq": self.seq}  # fmt: skip


@dataclass(frozen=True)
class Ending:
    """How a challenge ends: its challenger promoted or not, the outcome, the reason, the figures."""

    promote: bool
    outcome: ChallengeOutcome
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def _parse(doc: dict[str, Any] | None) -> Challenge | None:
    if not doc or not doc.get("version"):
        return None
    return Challenge(str(doc["id"]), str(doc["version"]), doc.get("against"), doc["started_at"], int(doc["seq"]))


def read(db: Db) -> tuple[versions.ChampionRecord, Challenge | None]:
    """The champion record and its running challenge, read together (one document)."""
    doc = db[CHAMPION_RECORD].find_one({"_id": RECORD_ID}) or {}
    record = versions.ChampionRecord(doc.get("version"), list(doc.get("chain") or []), int(doc.get("seq") or 0))
    return record, _parse(doc.get("challenge"))


def start(db: Db, version: str, *, against: str | None, by: str, reason: str) -> tuple[Challenge, Challenge | None]:
    """Make `version` the challenger of `against`; returns (the challenge, the one it replaced).

    Conditional on the champion still being `against` (else StaleCandidate-like ChampionChanged) and on
    the challenge read being the one replaced: a newer candidate that passed the screen replaces a
    running challenger and the test starts again, since it was trained on more feedback. (The producer
    starts no automatic job while a challenge runs, so only a job that started before it, or one asked
    for by hand, ever replaces one.)"""
    for _ in range(20):
        record, running = read(db)
        if record.version != against:
            raise ChampionChanged(
                f"champion changed from {against or 'the base model'} to {record.version or 'none'} "
                f"while {version} was judged; it does not become the challenger"
            )
        at = server_now(db)
        new = Challenge(uuid.uuid4().hex, version, against, at, record.seq)
        query: dict[str, Any] = {"_id": RECORD_ID, "seq": record.seq}
        if running is not None:
            query["challenge.id"] = running.id
        else:
            query["challenge"] = {"$exists": False}
        result = db[CHAMPION_RECORD].update_one(query, {"$set": {"challenge": new.as_doc()}},
                                                upsert=record.seq == 0 and running is None)  # fmt: skip
        if result.matched_count or result.upserted_id is not None:
            versions.set_status(db, version, VersionStatus.CHALLENGER, by=by, reason=reason, at=at,
                                challenge={"against": against, "started_at": at, "id": new.id})  # fmt: skip
            if running is not None and running.version != version:
                _close(db, running, Ending(False, ChallengeOutcome.REPLACED, f"replaced by {version}"), by=by, at=at)
            return new, running
    raise RuntimeError(f"could not start the challenge of {version}: the champion record kept changing")


def store_figures(db: Db, challenge: Challenge, figures: dict[str, Any]) -> None:
    """The running comparison, on the challenger's document (only while it is this challenge's)."""
    db[MODEL_VERSIONS].update_one(
        {"version": challenge.version, "challenge.id": challenge.id, "challenge.outcome": {"$exists": False}},
        {"$set": {"challenge.figures": figures, "challenge.refreshed_at": server_now(db)}},
    )


def end(db: Db, seen: Challenge, ending: Ending, *, by: str, fence: LeaseFence | None = None) -> None:
    """End the challenge `seen` as `ending` says, only if the record is still the one the decision judged
    (same `seq`, same challenge), and, with `fence`, only while the producer's lease is held in the term
    the decision was made under. Raises ChampionChanged or LeaseLapsed, changing
    nothing, otherwise."""
    at = server_now(db)
    query = {"_id": RECORD_ID, "seq": seen.seq, "challenge.id": seen.id}
    reason = ending.reason
    if ending.promote:
        record, _ = read(db)
        chain = [*record.chain, seen.version][-versions.CHAIN_LIMIT :]
        update: dict[str, Any] = {
            "$set": {"version": seen.version, "chain": chain, "switched_at": at, "by": by, "reason": reason},
            "$inc": {"seq": 1},
            "$unset": {"challenge": ""},
        }
        query["version"] = seen.against  # with seq, this already holds; said for the reader
    else:
        update = {"$unset": {"challenge": ""}}
    record_doc = db[CHAMPION_RECORD]
    if fence is None:
        matched = record_doc.update_one(query, update).matched_count
    else:
        matched = fenced(db, fence, lambda session: record_doc.update_one(query, update, session=session).matched_count)
    if matched != 1:
        raise ChampionChanged(f"the challenge of {seen.version} changed while it was judged; nothing changed")
    _close(db, seen, ending, by=by, at=at)
    if ending.promote:
        db[MODEL_VERSIONS].update_one({"version": seen.version}, {"$set": {"previous_champion": seen.against}})
        if seen.against is not None:
            versions.set_status(db, seen.against, versions.RETIRED, by=by, reason=reason, at=at, retired_at=at)
        versions.sync_statuses(db, by=by, reason=reason, forced=False)


def _close(db: Db, challenge: Challenge, ending: Ending, *, by: str, at: datetime) -> None:
    """The ended challenge's outcome on its challenger; a challenger not promoted is rejected (an
    operator may still promote it by hand, with --force)."""
    fields = {"challenge.outcome": ending.outcome, "challenge.reason": ending.reason, "challenge.ended_at": at}
    if ending.figures:
        fields["challenge.figures"] = ending.figures
    db[MODEL_VERSIONS].update_one({"version": challenge.version, "challenge.id": challenge.id}, {"$set": fields})
    if not ending.promote:
        why = f"challenge {ending.outcome}: {ending.reason}"
        versions.set_status(db, challenge.version, versions.REJECTED, by=by, reason=why, at=at, gate_reason=why)


def sync_challenger(db: Db, *, by: str = "reconcile") -> list[str]:
    """Versions left `challenger` by a crash between the record's write and the status's: rejected unless
    the record names them. Returns the versions changed."""
    _, running = read(db)
    keep = running.version if running else None
    changed = []
    for doc in db[MODEL_VERSIONS].find({"status": VersionStatus.CHALLENGER, "version": {"$ne": keep}}, {"version": 1}):
        versions.set_status(db, doc["version"], versions.REJECTED, by=by, reason="no longer the challenger")
        changed.append(doc["version"])
    return changed


def served_count(db: Db, version: str, since: datetime, *, limit: int = 1) -> int:
    """Results `version` contributed since `since`, counted up to `limit` (the fallback asks: any?)."""
    query = {"model_version": version, "created_at": {"$gte": since}}
    return db[INFERENCES].count_documents(query, limit=limit)
