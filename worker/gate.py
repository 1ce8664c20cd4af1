"""Should a candidate replace the champion? A pure decision on metrics from the same held-out pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def decide_promotion(
    before: dict[str, Any], after: dict[str, Any], min_improvement: float, *, metric: str = "roc_auc"
) -> GateDecision:
    """`before` is the champion (or the base model) scored on the held-out pairs, `after` the candidate."""
    new, old = after.get(metric), before.get(metric)
    if new is None:
        return GateDecision(False, f"candidate {metric} is undefined on the held-out pairs")
    if old is None:
        return GateDecision(True, f"champion {metric} is undefined; candidate {metric}={new:.4f}")
    gain = new - old
    if gain > 0 and gain >= min_improvement:
        return GateDecision(True, f"{metric} {old:.4f} → {new:.4f} (+{gain:.4f} ≥ {min_improvement})")
    return GateDecision(
        False, f"{metric} {old:.4f} → {new:.4f} ({gain:+.4f}); needs at least +{min_improvement} and > 0"
    )
