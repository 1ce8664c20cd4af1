"""The online guard: is the champion's like rate significantly below the holdback's? Pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass


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


@dataclass(frozen=True)
class GuardDecision:
    rollback: bool
    reason: str
    p_value: float | None = None


def _z(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (bisection on erf: no SciPy in the producer)."""
    target, low, high = confidence, 0.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if math.erf(mid / math.sqrt(2)) < target else (low, mid)
    return (low + high) / 2


def one_sided_p(champion: LiveRate, holdback: LiveRate) -> float:
    """P-value of "the champion's like rate is lower" (pooled two-proportion z-test)."""
    n1, n2 = champion.feedback, holdback.feedback
    pooled = (champion.likes + holdback.likes) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (champion.likes / n1 - holdback.likes / n2) / se
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def judge(champion: LiveRate, holdback: LiveRate | None, *, min_feedback: int, confidence: float) -> GuardDecision:
    if holdback is None or holdback.feedback == 0:
        return GuardDecision(False, "no holdback feedback: reporting only")
    if champion.feedback < min_feedback or holdback.feedback < min_feedback:
        return GuardDecision(
            False,
            f"waiting for {min_feedback} feedbacks each: champion {champion.feedback}, holdback {holdback.feedback}",
        )
    p = one_sided_p(champion, holdback)
    figures = (
        f"like rate {champion.version} {champion.likes}/{champion.feedback} = {champion.rate:.3f} vs holdback "
        f"{holdback.version} {holdback.likes}/{holdback.feedback} = {holdback.rate:.3f}, one-sided p = {p:.2g}"
    )
    if p < 1 - confidence:
        return GuardDecision(True, f"champion significantly worse with users: {figures}", p)
    return GuardDecision(False, f"no significant difference: {figures}", p)
