"""The challenge duty: read what users did with the interleaved lists, decide, and act on that state only.

Each refresh reads the champion record and its challenge together (one document), the interleaved
searches since the challenge began, and decides (`producer.challenge.decide`, pure). A promotion or a
rejection is then one conditional write on the record as it was read (`seq` and the challenge's id): if
the champion switched or the challenge changed meanwhile, nothing changes and the next refresh decides
again on fresh figures. A challenge whose champion was replaced meanwhile (by hand, by a rollback) is
void: what its challenger was compared with no longer serves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from eduranker import champion
from eduranker.errors import ChampionChanged, EduRankerError
from eduranker.records import ChallengeOutcome
from eduranker.settings import Settings
from eduranker.store import challenge as store
from eduranker.store import versions
from eduranker.store.clock import server_now
from eduranker.store.online import impressions
from eduranker.store.types import Db
from producer.challenge import Action, ChallengeDecision, ChallengeRule, decide
from producer.guard import compare
from producer.online import impression_of

log = logging.getLogger(__name__)
BY = "challenge"
OUTCOMES = {
    Action.PROMOTE: ChallengeOutcome.PROMOTED,
    Action.REJECT: ChallengeOutcome.REJECTED,
    Action.CAP: ChallengeOutcome.CAPPED,
    Action.OFFLINE: ChallengeOutcome.OFFLINE,
    Action.VOID: ChallengeOutcome.VOID,
}


@dataclass(frozen=True)
class Refreshed:
    challenge: store.Challenge
    decision: ChallengeDecision
    applied: bool  # the decision ended the challenge (False: waiting, or the state changed meanwhile)


def judge(db: Db, seen: store.Challenge, rule: ChallengeRule, now: datetime) -> ChallengeDecision:
    """The decision on the challenge `seen`, from the interleaved searches since it began."""
    rows = impressions(db, [seen.version, seen.against], seen.started_at)
    comparison = compare([impression_of(r) for r in rows], seen.version, seen.against)
    doc = versions.get_version(db, seen.version)
    offline = bool((doc.get("gate") or {}).get("promote"))
    served = store.served_count(db, seen.version, seen.started_at)
    elapsed = (now - seen.started_at).total_seconds()
    return decide(comparison, rule, elapsed_s=elapsed, challenger_served=served, offline_promote=offline)


def refresh_challenge(db: Db, settings: Settings) -> Refreshed | None:
    """One look at the running challenge; ends it when the test (or a cap, or the fallback) decides."""
    record, seen = store.read(db)
    if seen is None:
        return None
    if record.seq != seen.seq:  # the champion switched since the challenge began: nothing to compare
        why = f"the champion changed to {record.version or 'the base model'} during the challenge"
        void = ChallengeDecision(Action.VOID, why)
        return Refreshed(seen, void, _end(db, settings, seen, void, seq=record.seq))
    decision = judge(db, seen, settings.config(ChallengeRule), server_now(db))
    if decision.action is Action.WAIT:
        store.store_figures(db, seen, {**decision.figures, "decision": decision.reason})
        return Refreshed(seen, decision, False)
    return Refreshed(seen, decision, _end(db, settings, seen, decision))


def _end(
    db: Db,
    settings: Settings,
    seen: store.Challenge,
    decision: ChallengeDecision,
    *,
    seq: int | None = None,
) -> bool:
    """Apply the decision to the exact state judged (`seq`: the record's, for a void challenge); False
    (nothing changed) if that state is gone."""
    outcome = OUTCOMES[decision.action]
    judged = seen if seq is None else store.Challenge(seen.id, seen.version, seen.against, seen.started_at, seq)
    try:
        champion.end_challenge(db, settings.models_dir, judged, promote=decision.promote, outcome=outcome,
                               reason=decision.reason, figures=decision.figures, by=BY)  # fmt: skip
    except ChampionChanged as exc:
        log.info("challenge of %s: decision dropped, the state it judged changed: %s", seen.version, exc)
        return False
    except EduRankerError as exc:  # e.g. the challenger's folder is gone: it cannot be promoted
        log.warning("challenge of %s: %s could not be applied: %s", seen.version, decision.action, exc)
        return False
    log.warning("challenge of %s against %s ended (%s): %s", seen.version, seen.against or "the base model",
                outcome, decision.reason)  # fmt: skip
    return True
