"""Should a candidate replace the champion? A pure decision on metrics from the same held-out pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


# How much worse than the champion a candidate may score on the champion's own held-out pairs.
MAX_REGRESSION = 0.02


def decide_promotion(
    before: dict[str, Any],
    after: dict[str, Any],
    min_improvement: float,
    *,
    metric: str = "roc_auc",
    reference: tuple[dict[str, Any], dict[str, Any]] | None = None,
    max_regression: float = MAX_REGRESSION,
) -> GateDecision:
    """`before` is the champion (or the base model) scored on the held-out pairs, `after` the candidate.

    `reference` is (champion, candidate) scored on the pairs the champion was held out on, with the labels
    they had then. New feedback can be wrong wholesale (a client bug that swaps like and dislike): then the
    new held-out pairs agree with the candidate and only the old, frozen pairs show the damage.
    """
    if reference is not None:
        champ_ref, cand_ref = reference[0].get(metric), reference[1].get(metric)
        if champ_ref is not None and (cand_ref is None or cand_ref < champ_ref - max_regression):
            shown = "undefined" if cand_ref is None else f"{cand_ref:.4f}"
            return GateDecision(
                False,
                f"{metric} on the champion's held-out pairs falls {champ_ref:.4f} → {shown} "
                f"(more than {max_regression}); the new feedback contradicts what the champion learned",
            )
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
