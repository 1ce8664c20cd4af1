"""The online guard: is the champion worse with users than the version before it? Pure functions.

Two ways of comparing, whichever the search API serves: a holdback (a salted share of users served by
the previous champion: like rates of two groups of users) or team-draft interleaving (both versions
contribute documents to the same list: each impression is credited to the version whose documents drew
more likes, dislikes counting against). Either way the decision is the always-valid sequential test of
`producer.sequential` on clusters of users (an anonymous search is a cluster of its own), so the
rollback keeps its error rate however often the guard looks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from producer.sequential import Clustered, Sequential, difference, ratio_estimate, sequential_test

# The mixture's spread over the effect (its standard deviation, on the effect's own scale): the mSPRT is
# most sensitive to effects near it and valid for any. A 10% relative drop of a 0.6 like rate is -0.06
# in like rate, and about -0.05 to -0.1 in mean interleaving credit (bench/online_decisions.py).
HOLDBACK_TAU = 0.05
INTERLEAVE_TAU = 0.1
# Below this many users on a side the cluster-robust variance is itself too noisy to lean on: with 20,
# equal models were rolled back in 0.87% of simulated 30-day runs, with 100 in 0.40% (1500 runs each,
# bench/online_decisions.py's model), against the 1% the 0.99 setting promises.
MIN_CLUSTERS = 100


class Mode(StrEnum):
    HOLDBACK = "holdback"
    INTERLEAVE = "interleave"
    NONE = "none"


@dataclass(frozen=True)
class LiveRate:
    version: str | None
    feedback: int
    likes: int

    @property
    def rate(self) -> float | None:
        return self.likes / self.feedback if self.feedback else None

    def wilson(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """Wilson score interval of the like rate."""
        if not self.feedback:
            return None
        z = _z(confidence)
        n, p = self.feedback, self.likes / self.feedback
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (bisection on erf: no SciPy in the producer)."""
    target, low, high = confidence, 0.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if math.erf(mid / math.sqrt(2)) < target else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Impression:
    """One search (a `user_queries` document): its results' versions and the reactions to them."""

    cluster: str  # the user, or the impression itself for an anonymous search
    served: frozenset[str | None]  # versions that contributed results
    likes: Mapping[str | None, int] = field(default_factory=dict)
    dislikes: Mapping[str | None, int] = field(default_factory=dict)

    def feedback(self, version: str | None) -> int:
        return self.likes.get(version, 0) + self.dislikes.get(version, 0)

    def net(self, version: str | None) -> int:
        return self.likes.get(version, 0) - self.dislikes.get(version, 0)


@dataclass(frozen=True)
class Comparison:
    mode: Mode
    champion: str
    baseline: str | None
    impressions: int = 0
    feedback: int = 0  # reactions on the compared traffic
    wins: int = 0  # interleaving: impressions the champion won, lost, tied
    losses: int = 0
    ties: int = 0
    rates: tuple[LiveRate, LiveRate] | None = None  # holdback: champion, baseline
    effect: Clustered | None = None
    clusters: tuple[int, int] = (0, 0)


def _credit(imp: Impression, champion: str, baseline: str | None) -> int:
    mine, theirs = imp.net(champion), imp.net(baseline)
    return (mine > theirs) - (mine < theirs)


def _interleaved(impressions: list[Impression], champion: str, baseline: str | None) -> Comparison:
    per_user: dict[str, list[int]] = {}
    credits = [_credit(imp, champion, baseline) for imp in impressions]
    for imp, credit in zip(impressions, credits, strict=True):
        sums = per_user.setdefault(imp.cluster, [0, 0])
        sums[0] += credit
        sums[1] += 1
    effect = ratio_estimate([s[0] for s in per_user.values()], [s[1] for s in per_user.values()])
    return Comparison(
        Mode.INTERLEAVE, champion, baseline, len(impressions),
        sum(imp.feedback(champion) + imp.feedback(baseline) for imp in impressions),
        credits.count(1), credits.count(-1), credits.count(0),
        effect=effect, clusters=(len(per_user), len(per_user)),
    )  # fmt: skip


def _side(impressions: Iterable[Impression], version: str | None) -> tuple[LiveRate, Clustered]:
    per_user: dict[str, list[int]] = {}
    for imp in impressions:
        sums = per_user.setdefault(imp.cluster, [0, 0])
        sums[0] += imp.likes.get(version, 0)
        sums[1] += imp.feedback(version)
    likes, feedback = sum(s[0] for s in per_user.values()), sum(s[1] for s in per_user.values())
    return LiveRate(version, feedback, likes), ratio_estimate([s[0] for s in per_user.values()],
                                                             [s[1] for s in per_user.values()])  # fmt: skip


def compare(impressions: Iterable[Impression], champion: str, baseline: str | None) -> Comparison:
    """The running comparison: interleaved impressions when the API interleaves, else the holdback."""
    with_feedback = [imp for imp in impressions if imp.feedback(champion) + imp.feedback(baseline)]
    both = [imp for imp in with_feedback if champion in imp.served and baseline in imp.served]
    if both:
        return _interleaved(both, champion, baseline)
    mine = [imp for imp in with_feedback if imp.served == frozenset({champion})]
    theirs = [imp for imp in with_feedback if imp.served == frozenset({baseline})]
    if not theirs:
        return Comparison(Mode.NONE, champion, baseline, len(mine), sum(imp.feedback(champion) for imp in mine))
    (rate_c, est_c), (rate_b, est_b) = _side(mine, champion), _side(theirs, baseline)
    return Comparison(
        Mode.HOLDBACK, champion, baseline, len(mine) + len(theirs), rate_c.feedback + rate_b.feedback,
        rates=(rate_c, rate_b), effect=difference(est_c, est_b), clusters=(est_c.clusters, est_b.clusters),
    )  # fmt: skip


@dataclass(frozen=True)
class GuardDecision:
    rollback: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def _waiting(c: Comparison, min_feedback: int) -> str | None:
    if c.mode is Mode.HOLDBACK and c.rates is not None:
        mine, theirs = c.rates
        if min(mine.feedback, theirs.feedback) < min_feedback:
            return f"waiting for {min_feedback} feedbacks each: champion {mine.feedback}, holdback {theirs.feedback}"
    if c.mode is Mode.INTERLEAVE and c.feedback < min_feedback:
        return f"waiting for {min_feedback} feedbacks on interleaved results: {c.feedback} so far"
    if min(c.clusters) < MIN_CLUSTERS:
        return f"waiting for {MIN_CLUSTERS} users on each side: {c.clusters[0]} and {c.clusters[1]}"
    return None


def figures(c: Comparison, test: Sequential | None, confidence: float) -> dict[str, Any]:
    """What the decision rests on, as stored on the version and shown by the CLI."""
    out: dict[str, Any] = {"mode": str(c.mode), "champion": c.champion, "baseline": c.baseline,
                           "impressions": c.impressions, "feedback": c.feedback, "users": list(c.clusters),
                           "confidence": confidence}  # fmt: skip
    if c.mode is Mode.INTERLEAVE:
        out.update(wins=c.wins, losses=c.losses, ties=c.ties)
    if c.rates is not None:
        out.update(champion_likes=c.rates[0].likes, champion_feedback=c.rates[0].feedback,
                   baseline_likes=c.rates[1].likes, baseline_feedback=c.rates[1].feedback)  # fmt: skip
    if test is not None:
        out.update(estimate=test.estimate, low=test.low, high=test.high, log_evidence=test.log_ratio,
                   log_evidence_needed=test.threshold)  # fmt: skip
    return out


def judge(c: Comparison, *, min_feedback: int, confidence: float) -> GuardDecision:
    """Roll back when the always-valid interval of (champion - baseline) lies wholly below zero."""
    if c.mode is Mode.NONE or c.effect is None:
        return GuardDecision(False, "no holdback or interleaved feedback: reporting only", figures(c, None, confidence))
    waiting = _waiting(c, min_feedback)
    if waiting is not None:
        return GuardDecision(False, waiting, figures(c, None, confidence))
    tau = INTERLEAVE_TAU if c.mode is Mode.INTERLEAVE else HOLDBACK_TAU
    test = sequential_test(c.effect, tau2=tau * tau, alpha=1 - confidence)
    found = figures(c, test, confidence)
    text = describe(found)
    if test.worse:
        return GuardDecision(True, f"champion worse with users: {text}", found)
    return GuardDecision(False, f"no decision yet: {text}", found)


def describe(f: dict[str, Any]) -> str:
    """One line for an operator: the comparison, the interval, and how far it is from a decision."""
    champion, baseline = f.get("champion"), f.get("baseline") or "the base model"
    if f.get("mode") == Mode.INTERLEAVE:
        head = (f"interleaving {champion} vs {baseline}: {f['impressions']} impressions ({f['feedback']} feedbacks), "
                f"{champion} won {f['wins']}, {baseline} won {f['losses']}, {f['ties']} tied")  # fmt: skip
        what = "mean credit"
    elif f.get("mode") == Mode.HOLDBACK:
        users = f"{f['users'][0]}/{f['users'][1]} users"
        head = (f"holdback: like rate {champion} {f['champion_likes']}/{f['champion_feedback']} vs holdback "
                f"{baseline} {f['baseline_likes']}/{f['baseline_feedback']}, {users}")  # fmt: skip
        what = "difference"
    else:
        return f"no comparison: {f.get('impressions', 0)} impressions served by {champion} alone"
    if "estimate" not in f:
        return head
    level = f"{f['confidence']:.0%}"
    bound = (f"{what} {f['estimate']:+.3f}, {level} always-valid interval [{f['low']:+.3f}, {f['high']:+.3f}]; "
             f"evidence {f['log_evidence']:.2f} of {f['log_evidence_needed']:.2f} (log) a decision needs")  # fmt: skip
    return f"{head}; {bound}"
