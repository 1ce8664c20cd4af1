"""Should the challenger replace the champion? A pure decision on what users did with both rankings.

While a challenge runs, the search API serves searches a team-draft interleaving of the champion's and
the challenger's rankings (`ChampionReranker`). Each interleaved search with feedback is credited to the
version whose documents drew more likes, dislikes counting against (`producer.guard.compare`), users
are clusters, and the decision is the always-valid sequential test of `producer.sequential` on the mean
credit from the challenger's side: it may be looked at every minute for as long as the challenge runs.

- **promote** when the always-valid interval lies wholly above zero;
- **reject** when it lies wholly below zero;
- **cap**: no decision after `max_impressions` interleaved searches with feedback or `max_days`: the
  champion stays (the two are too close to matter at that size);
- **offline**: no search was served interleaved within `fallback_seconds` of the start: the search API
  does not interleave (it serves `models/champion` itself), so the offline gate's verdict decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from producer.guard import INTERLEAVE_TAU, MIN_CLUSTERS, Comparison, Mode, describe, figures
from producer.sequential import sequential_test


@dataclass(frozen=True)
class ChallengeRule:
    """The challenge's config: each field takes the setting it names (`Settings.config(ChallengeRule)`)."""

    confidence: float = field(metadata={"setting": "challenge_confidence"})
    min_feedback: int = field(metadata={"setting": "challenge_min_feedback"})
    max_impressions: int = field(metadata={"setting": "challenge_max_impressions"})
    max_days: float = field(metadata={"setting": "challenge_max_days"})
    fallback_seconds: float = field(metadata={"setting": "challenge_fallback_seconds"})


class Action(StrEnum):
    WAIT = "wait"
    PROMOTE = "promote"
    REJECT = "reject"
    CAP = "cap"
    OFFLINE = "offline"
    VOID = "void"  # the champion switched since the challenge began: nothing left to compare with


@dataclass(frozen=True)
class ChallengeDecision:
    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.action is Action.PROMOTE or (self.action is Action.OFFLINE and bool(self.figures.get("offline")))


def _capped(c: Comparison, rule: ChallengeRule, elapsed_s: float) -> str | None:
    if c.impressions >= rule.max_impressions:
        return f"{c.impressions} interleaved searches with feedback (cap {rule.max_impressions})"
    if elapsed_s >= rule.max_days * 86400:
        return f"{elapsed_s / 86400:.1f} days (cap {rule.max_days:g})"
    return None


def _waiting(c: Comparison, rule: ChallengeRule) -> str | None:
    if c.feedback < rule.min_feedback:
        return f"waiting for {rule.min_feedback} feedbacks on interleaved results: {c.feedback} so far"
    if c.clusters[0] < MIN_CLUSTERS:
        return f"waiting for {MIN_CLUSTERS} users: {c.clusters[0]} so far"
    return None


def decide(
    c: Comparison, rule: ChallengeRule, *, elapsed_s: float, challenger_served: int, offline_promote: bool
) -> ChallengeDecision:
    """`c`: the comparison with the challenger as `champion` and the champion as `baseline` (so the
    effect is the challenger's). `challenger_served`: results the challenger contributed since the start;
    `offline_promote`: whether the offline gate's interval cleared its bar (the fallback's verdict)."""
    if challenger_served == 0 and elapsed_s >= rule.fallback_seconds:
        verdict = "clears the offline bar: promoted" if offline_promote else "does not clear the offline bar: rejected"
        why = f"no search served interleaved in {elapsed_s / 3600:.1f} h: decided offline; {verdict}"
        return ChallengeDecision(Action.OFFLINE, why, {"offline": offline_promote, "mode": str(Mode.NONE)})
    if c.mode is not Mode.INTERLEAVE or c.effect is None:
        found = figures(c, None, rule.confidence)
        capped = _capped(c, rule, elapsed_s)
        if capped:
            return ChallengeDecision(Action.CAP, f"no decision after {capped}: the champion stays", found)
        return ChallengeDecision(Action.WAIT, "waiting for interleaved searches with feedback", found)
    test = sequential_test(c.effect, tau2=INTERLEAVE_TAU**2, alpha=1 - rule.confidence)
    waiting = _waiting(c, rule)
    found = figures(c, None if waiting else test, rule.confidence)
    text = describe(found)
    if waiting is None and test.low > 0:
        return ChallengeDecision(Action.PROMOTE, f"users prefer the challenger: {text}", found)
    if waiting is None and test.high < 0:
        return ChallengeDecision(Action.REJECT, f"users prefer the champion: {text}", found)
    capped = _capped(c, rule, elapsed_s)
    if capped:
        return ChallengeDecision(Action.CAP, f"no decision after {capped}: the champion stays; {text}", found)
    return ChallengeDecision(Action.WAIT, waiting or f"no decision yet: {text}", found)
