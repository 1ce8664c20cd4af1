"""A challenge as an operator meets it: ended by hand (`eduranker promote` / `eduranker reject`), and
the lines `eduranker status` and `eduranker versions` print for it."""

from __future__ import annotations

from pathlib import Path

from eduranker import champion
from eduranker.errors import Refused
from eduranker.records import ChallengeOutcome, VersionDoc
from eduranker.store import challenge
from eduranker.store.connection import MODEL_VERSIONS
from eduranker.store.types import Db


def running_challenger(db: Db) -> str | None:
    return running.version if (running := challenge.read(db)[1]) else None


def end_by_hand(db: Db, models: str | Path, version: str | None, *, promote: bool, reason: str) -> challenge.Challenge:
    """End the running challenge by an operator's word: its challenger promoted or rejected. `version`,
    when given, must be the challenger (a stale command changes nothing)."""
    _, running = challenge.read(db)
    if running is None:
        raise Refused("no challenge is running")
    if version is not None and version != running.version:
        raise Refused(f"{version} is not the challenger ({running.version} is)")
    champion.end_challenge(db, models, running, challenge.Ending(promote, ChallengeOutcome.BY_HAND, reason), by="cli")
    return running


def status_lines(db: Db) -> list[str]:
    """The running challenge in a line or two, or nothing."""
    from producer.guard import describe

    _, running = challenge.read(db)
    if running is None:
        return _last_ended(db)
    doc = db[MODEL_VERSIONS].find_one({"version": running.version}, {"challenge": 1}) or {}
    figures = (doc.get("challenge") or {}).get("figures") or {}
    lines = [f"challenge: {running.version} vs {running.against or 'the base model'} since "
             f"{running.started_at:%Y-%m-%d %H:%M} UTC (interleaved; users decide)"]  # fmt: skip
    if figures:
        lines.append(f"  {figures.get('decision') or describe(figures)}")
    else:
        lines.append("  not judged yet")
    return lines


def version_lines(rows: list[VersionDoc]) -> list[str]:
    """Each ended challenge's outcome and reason, for `eduranker versions`."""
    out = []
    for v in rows:
        ended = v.get("challenge") or {}
        if ended.get("outcome"):
            out.append(f"{v['version']} challenge {ended['outcome']}: {ended.get('reason')}")
    return out


def _last_ended(db: Db) -> list[str]:
    """The newest ended challenge, where it fell back to the offline gate: the search API does not
    interleave, and an operator should know that users did not decide."""
    doc = db[MODEL_VERSIONS].find_one({"challenge.outcome": {"$type": "string"}}, {"version": 1, "challenge": 1},
                                      sort=[("version", -1)])  # fmt: skip
    ended = (doc or {}).get("challenge") or {}
    if ended.get("outcome") != ChallengeOutcome.OFFLINE:
        return []
    return [f"last challenge: {doc['version']} decided offline, the search API served no interleaved search "  # type: ignore[index]
            f"(it does not use ChampionReranker?): {ended.get('reason')}"]  # fmt: skip
