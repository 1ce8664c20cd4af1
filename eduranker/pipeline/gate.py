"""Should a candidate replace the champion? A pure decision on evidence from the same held-out pairs.

The candidate is promoted only when the lower bound of the bootstrap interval of its ROC-AUC gain over
the champion (the base model for a first model) clears `min_improvement`. Below the minimum held-out
size, or with one class held out, the gate refuses to decide. On the champion's own frozen held-out
pairs, a candidate whose whole interval lies below −`max_regression` is rejected: new feedback can be
wrong wholesale (a client that swaps like and dislike), and only the old pairs show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eduranker.pipeline.bootstrap import Interval, paired_bootstrap


@dataclass(frozen=True)
class GateRule:
    min_improvement: float = 0.005
    confidence: float = 0.95
    samples: int = 1000
    min_pairs: int = 40
    min_queries: int = 8
    max_regression: float = 0.02
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """Champion and candidate scored on the same labelled pairs."""

    labels: Sequence[float]
    champion: Sequence[float]
    candidate: Sequence[float]
    queries: Sequence[str]

    @property
    def size(self) -> tuple[int, int]:
        return len(self.labels), len(set(self.queries))


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    refused: bool = False  # too little evidence to decide either way
    evidence: dict[str, Any] = field(default_factory=dict)  # intervals, sizes: stored with the version


def _intervals(comparison: Comparison, rule: GateRule) -> dict[str, Interval]:
    return paired_bootstrap(
        comparison.labels,
        comparison.champion,
        comparison.candidate,
        comparison.queries,
        samples=rule.samples,
        confidence=rule.confidence,
        seed=rule.seed,
    )


def insufficient(comparison: Comparison, rule: GateRule) -> str | None:
    """Why these held-out pairs cannot support a decision, or None if they can."""
    pairs, queries = comparison.size
    classes = len({label > 0.5 for label in comparison.labels})
    if pairs < rule.min_pairs or queries < rule.min_queries:
        return (
            f"held-out set too small to decide: {pairs} pairs from {queries} queries; "
            f"the gate needs at least {rule.min_pairs} pairs and {rule.min_queries} queries"
        )
    if classes < 2:
        return f"held-out set has one class only ({pairs} pairs): ROC-AUC is undefined"
    return None


def decide_promotion(heldout: Comparison, rule: GateRule, reference: Comparison | None = None) -> GateDecision:
    """`heldout`: this job's held-out pairs. `reference`: the champion's frozen held-out pairs, if any."""
    pairs, queries = heldout.size
    evidence: dict[str, Any] = {"heldout_pairs": pairs, "heldout_queries": queries, "rule": rule.__dict__}
    refusal = insufficient(heldout, rule)
    if refusal is not None:
        return GateDecision(False, refusal, refused=True, evidence=evidence)
    intervals = _intervals(heldout, rule)
    evidence["intervals"] = {name: interval.as_dict() for name, interval in intervals.items()}

    if reference is not None and len({label > 0.5 for label in reference.labels}) == 2:
        frozen = _intervals(reference, rule)["roc_auc"]
        evidence["reference"] = {"pairs": reference.size[0], "queries": reference.size[1], **frozen.as_dict()}
        if frozen.high is not None and frozen.high < -rule.max_regression:
            return GateDecision(
                False,
                f"on the champion's frozen held-out pairs {frozen.describe()} lies wholly below "
                f"-{rule.max_regression}: the new feedback contradicts what the champion learned",
                evidence=evidence,
            )

    auc = intervals["roc_auc"]
    size = f"{pairs} pairs / {queries} queries"
    if auc.low is None:
        return GateDecision(False, f"ROC-AUC change undefined on {size}", evidence=evidence)
    if auc.low > rule.min_improvement:
        return GateDecision(
            True, f"{auc.describe()} on {size}; lower bound clears +{rule.min_improvement}", evidence=evidence
        )
    return GateDecision(
        False,
        f"{auc.describe()} on {size}; lower bound does not clear +{rule.min_improvement} (gain within the noise)",
        evidence=evidence,
    )
