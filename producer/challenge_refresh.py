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
from eduranker.store import comparison_sums, versions
from eduranker.store.clock import server_now
from eduranker.store.lease import LeaseFence, LeaseLapsed
from eduranker.store.types import Db
from producer.challenge import Action, ChallengeDecision, ChallengeRule, decide
from producer.comparison import from_sums
from producer.live_comparison import LeaseCheck, refresh_sums
from producer.online_refresh import impression_of

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


def judge(
    db: Db, seen: store.Challenge, rule: ChallengeRule, now: datetime, lease: LeaseCheck | None = None
) -> ChallengeDecision:
    """The decision on the challenge `seen`, from the interleaved searches since it began: the running
    sums of `producer.live_comparison`, brought up to date with what changed since the last look."""
    against = seen.against  # None: the base model, whose results carry model_version null
    sums = refresh_sums(db, seen.version, against, seen.started_at, impression_of, lease=lease,  # type: ignore[arg-type]
                        purpose="challenge")  # fmt: skip
    if sums.rebuilt:
        comparison_sums.forget_comparisons(db, "challenge", keep=sums.key)
    comparison = from_sums(sums.clusters, seen.version, against)  # type: ignore[arg-type]
    doc = versions.get_version(db, seen.version)
    offline = bool((doc.get("gate") or {}).get("promote"))
    served = int(sums.totals.get("s1_served", 0))
    elapsed = (now - seen.started_at).total_seconds()
    return decide(comparison, rule, elapsed_s=elapsed, challenger_served=served, offline_promote=offline)


def refresh_challenge(db: Db, settings: Settings, lease: LeaseCheck | None = None) -> Refreshed | None:
    """One look at the running challenge; ends it when the test (or a cap, or the fallback) decides.
    `lease`: renews the producer's lease and returns its fence (None: unfenced, a single process)."""
    record, seen = store.read(db)
    if seen is None:
        return None
    if record.seq != seen.seq:  # the champion switched since the challenge began: nothing to compare
        why = f"the champion changed to {record.version or 'the base model'} during the challenge"
        void = ChallengeDecision(Action.VOID, why)
        fence = lease() if lease is not None else None
        return Refreshed(seen, void, _end(db, settings, seen, void, fence, seq=record.seq))
    decision = judge(db, seen, settings.config(ChallengeRule), server_now(db), lease)
    if decision.action is Action.WAIT:
        store.store_figures(db, seen, {**decision.figures, "decision": decision.reason})
        return Refreshed(seen, decision, False)
    fence = lease() if lease is not None else None  # the term this decision is made under
    return Refreshed(seen, decision, _end(db, settings, seen, decision, fence))


def _end(
    db: Db,
    settings: Settings,
    seen: store.Challenge,
    decision: ChallengeDecision,
    fence: LeaseFence | None,
    *,
    seq: int | None = None,
) -> bool:
    """Apply the decision to the exact state judged (`seq`: the record's, for a void challenge); False
    (nothing changed) if that state is gone."""
    outcome = OUTCOMES[decision.action]
    judged = seen if seq is None else store.Challenge(seen.id, seen.version, seen.against, seen.started_at, seq)
    try:
        ending = store.Ending(decision.promote, outcome, decision.reason, decision.figures)
        champion.end_challenge(db, settings.models_dir, judged, ending, by=BY, fence=fence)
    except (ChampionChanged, LeaseLapsed) as exc:
        log.info("challenge of %s: decision dropped, the state it judged changed: %s", seen.version, exc)
        return False
    except EduRankerError as exc:  # e.g. the challenger's folder is gone: it cannot be promoted
        log.warning("challenge of %s: %s could not be applied: %s", seen.version, decision.action, exc)
        return False
    log.warning("challenge of %s against %s ended (%s): %s", seen.version, seen.against or "the base model",
                outcome, decision.reason)  # fmt: skip
    return True
