"""`model_versions` and the champion record: the registry, which is the truth about what serves.

The champion is one document (`champion`, `_id: "current"`): its `version`, the `chain` of champions
that rollback walks back through, and `seq`, bumped by every switch. Every switch is one conditional
update on `seq`, so there is never an instant with zero or two champions, and a switch decided on a
stale read changes nothing. Each version's `status` follows the record (a crash between the two is
repaired by `sync_statuses`) and keeps a `history` of who changed it, when and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError

from eduranker.errors import ChampionChanged, Refused, StaleCandidate, UnknownVersion, VersionUnusable
from eduranker.records import RegisteredVersion, VersionDoc, VersionEvent, VersionStatus
from eduranker.store.clock import server_now
from eduranker.store.connection import CHAMPION_RECORD, COUNTERS, MODEL_VERSIONS
from eduranker.store.lease import LeaseFence, fenced
from eduranker.store.types import Db, index_of

# Each status under its own name (`versions.CHAMPION`): the members of VersionStatus.
CANDIDATE, CHAMPION, REJECTED = VersionStatus.CANDIDATE, VersionStatus.CHAMPION, VersionStatus.REJECTED
RETIRED, ROLLED_BACK = VersionStatus.RETIRED, VersionStatus.ROLLED_BACK
RECORD_ID = "current"
CHAIN_LIMIT = 100  # champions remembered for rollback


@dataclass(frozen=True)
class ChampionRecord:
    version: str | None = None
    chain: list[str] = field(default_factory=list)
    seq: int = 0

    @property
    def previous(self) -> str | None:
        return self.chain[-2] if len(self.chain) >= 2 else None


def allocate_version(db: Db) -> str:
    """Next version name, strictly increasing across the registry's life ("v0001", "v0002", ...)."""
    counter = db[COUNTERS].find_one_and_update(
        {"_id": "model_version"}, {"$inc": {"seq": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert counter is not None  # upsert with ReturnDocument.AFTER always returns the document
    return index_of(db).named(f"v{counter['seq']:04d}")


def _event(status: VersionStatus, by: str, reason: str, at: datetime) -> VersionEvent:
    return VersionEvent(status=status, at=at, by=by, reason=reason)


def _champion_event(by: str, reason: str, forced: bool | None, at: datetime) -> VersionEvent:
    """A promotion's event says whether it was forced over the gate (None where the syncer cannot know)."""
    return VersionEvent(status=CHAMPION, at=at, by=by, reason=reason, forced=forced)


def insert_version(db: Db, doc: RegisteredVersion, *, by: str = "worker") -> None:
    at = server_now(db)  # the one clock retention and the online figures compare these times with
    history = [_event(CANDIDATE, by, "registered", at)]
    db[MODEL_VERSIONS].insert_one({"status": CANDIDATE, "created_at": at, "history": history, **doc})


def get_version(db: Db, version: str) -> VersionDoc:
    doc = cast("VersionDoc | None", db[MODEL_VERSIONS].find_one({"version": version}))
    if doc is None:
        raise UnknownVersion(f"unknown model version: {version!r}")
    return doc


def list_versions(db: Db) -> list[VersionDoc]:
    return [cast(VersionDoc, doc) for doc in db[MODEL_VERSIONS].find({}, {"snapshot.skipped": 0}).sort("version", 1)]


def set_status(
    db: Db, version: str, status: VersionStatus, *, by: str, reason: str, at: datetime | None = None, **fields: Any
) -> None:
    """Record a status change with its reason, at `at` (the server's time; read now if not given). Not for
    champion: that goes through `switch`."""
    event = _event(status, by, reason, at or server_now(db))
    db[MODEL_VERSIONS].update_one(
        {"version": version, "status": {"$ne": status}},
        {"$set": {"status": status, **fields}, "$push": {"history": event}},
    )


def mark_pruned(db: Db, version: str, statuses: tuple[VersionStatus, ...], *, by: str, record_seq: int) -> bool:
    """Record that the version's folder is being deleted (`artifacts: "pruned"`): only while its status
    is still one of `statuses`, and while no promotion marked it from a champion record as new as the
    one the pruner read (`record_seq`: the pruner judged the versions it protects on that record), so
    a version being promoted keeps its folder. The document stays."""
    at = server_now(db)
    event = VersionEvent(artifacts="pruned", at=at, by=by, reason="retention")
    not_promoting = [{"promoting": {"$exists": False}}, {"promoting": {"$lt": record_seq}}]
    result = db[MODEL_VERSIONS].update_one(
        {"version": version, "status": {"$in": list(statuses)}, "artifacts": {"$ne": "pruned"}, "$or": not_promoting},
        {"$set": {"artifacts": "pruned", "pruned_at": at}, "$push": {"history": event}},
    )
    return result.modified_count == 1


def mark_promoting(db: Db, version: str, seq: int) -> None:
    """Mark `version` as being promoted over the champion record at `seq`, unless it was pruned: from
    here `mark_pruned` refuses it to any prune pass that read the record at `seq` or before. The mark
    stays: a pass that read the record later judged on what this promotion did (its switch, conditioned
    on `seq`, happened, or can no longer happen). VersionUnusable when its folder was pruned."""
    result = db[MODEL_VERSIONS].update_one(
        {"version": version, "artifacts": {"$ne": "pruned"}}, {"$max": {"promoting": seq}}
    )
    if result.matched_count == 0:
        doc = get_version(db, version)  # UnknownVersion if the document is gone
        raise VersionUnusable(f"{version}: its folder was pruned at {doc.get('pruned_at')}; it cannot be promoted")


def read_champion(db: Db) -> ChampionRecord:
    doc = db[CHAMPION_RECORD].find_one({"_id": RECORD_ID}) or {}
    return ChampionRecord(doc.get("version"), list(doc.get("chain") or []), int(doc.get("seq") or 0))


def get_champion(db: Db) -> VersionDoc | None:
    """The champion's version document, as the record names it."""
    record = read_champion(db)
    return get_version(db, record.version) if record.version else None


def _switch(db: Db, seen: ChampionRecord, new: ChampionRecord, *, by: str, reason: str) -> bool:
    """One conditional write: succeeds only if the record is still the one read as `seen`."""
    update = {
        "$set": {"version": new.version, "chain": new.chain, "switched_at": server_now(db), "by": by, "reason": reason},
        "$inc": {"seq": 1},
    }
    try:
        result = db[CHAMPION_RECORD].update_one({"_id": RECORD_ID, "seq": seen.seq}, update, upsert=seen.seq == 0)
    except DuplicateKeyError:  # the first champion was set by someone else meanwhile
        return False
    return result.matched_count == 1 or result.upserted_id is not None


def sync_statuses(db: Db, *, by: str = "reconcile", reason: str | None = None, forced: bool | None = None) -> list[str]:
    """Bring `model_versions.status` in step with the record; returns the versions changed.

    Demote first, then promote, so the partial unique index on status=champion holds throughout; an
    actor syncing at the same moment can make the promotion collide, and then it is read again.
    """
    changed: list[str] = []
    for _ in range(10):
        record = read_champion(db)
        for doc in db[MODEL_VERSIONS].find({"status": CHAMPION, "version": {"$ne": record.version}}, {"version": 1}):
            why = f"registry names {record.version or 'no champion'}"
            at = server_now(db)
            set_status(db, doc["version"], RETIRED, by=by, reason=why, at=at, retired_at=at)
            changed.append(doc["version"])
        if record.version is None:
            return changed
        try:
            result = db[MODEL_VERSIONS].update_one(
                {"version": record.version, "status": {"$ne": CHAMPION}},
                {
                    "$set": {"status": CHAMPION, "promoted_at": (at := server_now(db))},
                    "$push": {"history": _champion_event(by, reason or "registry names it champion", forced, at)},
                },
            )
        except DuplicateKeyError:
            continue
        if result.modified_count:
            changed.append(record.version)
        return changed
    raise RuntimeError("model_versions statuses kept changing while being synced")


def record_promotion(
    db: Db,
    version: str,
    *,
    by: str,
    reason: str,
    expected_champion: str | None | object = ...,
    force: bool = False,
    max_attempts: int = 20,
) -> str | None:
    """Make `version` the champion; returns the previous champion's version.

    `expected_champion`: the champion the candidate was judged against. If another version serves by
    now, nothing changes and StaleCandidate is raised. Without it (an operator's promote), a lost race
    is retried against the new record. A version the gate rejected needs `force`, and keeps that fact.
    A version whose folder retention pruned is refused (VersionUnusable), whenever the prune happened.
    """
    doc = get_version(db, version)
    if doc["status"] == REJECTED and not force:
        raise Refused(f"{version} was rejected by the gate ({doc.get('gate_reason')}); promote it with --force")
    if doc.get("guard_rolled_back") and expected_champion is not ...:
        raise Refused(f"{version} was rolled back by the online guard: only an operator may promote it again")
    for _ in range(max_attempts):
        seen = read_champion(db)
        if expected_champion is not ... and seen.version != expected_champion:
            raise StaleCandidate(
                f"champion changed from {expected_champion or 'the base model'} to {seen.version or 'none'} "
                f"while {version} was judged; not promoted"
            )
        if seen.version == version:
            return seen.previous
        mark_promoting(db, version, seen.seq)  # from here no prune pass may mark it (docs/retention.md)
        new = ChampionRecord(version, ([*seen.chain, version])[-CHAIN_LIMIT:], seen.seq + 1)
        if _switch(db, seen, new, by=by, reason=reason):
            _after_switch(db, seen.version, version, by=by, reason=reason, demoted_status=RETIRED, forced=force)
            return seen.version
        if expected_champion is not ...:
            continue  # re-read: the check above turns a changed champion into StaleCandidate
    raise RuntimeError(f"could not promote {version}: champion kept changing")


def mark_guard_rolled_back(db: Db, version: str) -> None:
    """Users liked this version less than its holdback: never promote it again automatically."""
    db[MODEL_VERSIONS].update_one({"version": version}, {"$set": {"guard_rolled_back": True}})


def rollback_target(db: Db) -> tuple[ChampionRecord, str]:
    """(record, version a rollback would restore); Refused when there is none."""
    record = read_champion(db)
    if record.version is None:
        raise Refused("there is no champion to roll back")
    if record.previous is None:
        raise Refused(f"champion {record.version} has no previous champion to roll back to")
    return record, record.previous


def record_rollback(
    db: Db, *, by: str, reason: str, seen: ChampionRecord | None = None, fence: LeaseFence | None = None
) -> tuple[str, str]:
    """Restore the champion before the current one and drop the current from the chain, so a second
    rollback goes one further back; returns (demoted, restored). With `seen`, only from that record: a
    record switched since raises ChampionChanged and nothing changes. With `fence`, the switch and the
    proof that the fence still holds the lease commit together, or LeaseLapsed and nothing changes."""
    record, restored = rollback_target(db) if seen is None else (seen, seen.previous)
    if record.version is None or restored is None:
        raise Refused("nothing to roll back to")
    new = ChampionRecord(restored, record.chain[:-1], record.seq + 1)
    if fence is None:
        switched = _switch(db, record, new, by=by, reason=reason)
    else:
        switched = fenced(db, fence, lambda session: _fenced_rollback(db, record, new, by, reason, fence, session))
    if not switched:
        raise ChampionChanged("the champion changed while the rollback was prepared; nothing changed")
    _after_switch(db, record.version, restored, by=by, reason=reason, demoted_status=ROLLED_BACK)
    return record.version, restored


def _fenced_rollback(
    db: Db, seen: ChampionRecord, new: ChampionRecord, by: str, reason: str, fence: LeaseFence, session: ClientSession
) -> bool:
    """The rollback's conditional write on `seq`, inside the lease's transaction; it names the fence."""
    update = {
        "$set": {"version": new.version, "chain": new.chain, "switched_at": server_now(db), "by": by, "reason": reason,
                 "fence": fence.as_doc()},
        "$inc": {"seq": 1},
    }  # fmt: skip
    result = db[CHAMPION_RECORD].update_one({"_id": RECORD_ID, "seq": seen.seq}, update, session=session)
    return result.matched_count == 1


def _after_switch(
    db: Db, old: str | None, new: str, *, by: str, reason: str, demoted_status: VersionStatus, forced: bool = False
) -> None:
    db[MODEL_VERSIONS].update_one({"version": new}, {"$set": {"previous_champion": old, "forced": forced}})
    if old is not None and old != new:
        at = server_now(db)
        fields: dict[str, object] = {"retired_at": at}
        if demoted_status == ROLLED_BACK:
            fields["rollback_reason"] = reason
        set_status(db, old, demoted_status, by=by, reason=reason, at=at, **fields)
    sync_statuses(db, by=by, reason=reason, forced=forced)


def withdraw_candidate(db: Db, version: str, job_id: str) -> bool:
    """Remove a version a superseded run registered and did not promote: only a `candidate` of that
    job (never a champion, nor another job's version). True when it was there."""
    query = {"version": version, "job_id": job_id, "status": CANDIDATE}
    return db[MODEL_VERSIONS].delete_one(query).deleted_count == 1
