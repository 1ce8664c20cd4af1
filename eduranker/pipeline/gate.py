"""Should a candidate replace the champion? A pure decision on evidence from the same held-out pairs.

The candidate is promoted only when the lower bound of the bootstrap interval of its ROC-AUC gain over
the champion (the base model for a first model) clears `min_improvement`; the reason says which of the
three cases it is: clears the bar, within the noise, or significantly worse (the whole interval below
zero). Below the minimum held-out size, or with one class held out, the gate refuses to decide. On the
champion's own frozen held-out pairs, a candidate whose whole interval lies below −`max_regression` is
rejected: new feedback can be wrong wholesale (a client that swaps like and dislike), and only the old
pairs show it. Where pairs carry a slice (the resource's subject), every slice with `slice_min_pairs`
held-out pairs gets its own interval, at a Bonferroni-corrected confidence so that the chance of any
false "worse" across the slices stays within the gate's; a candidate significantly worse on any slice
is rejected, so no regression hides in the average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eduranker.pipeline.bootstrap import Interval, paired_bootstrap
from eduranker.pipeline.evaluation import METRICS
from eduranker.records import GateEvidence, JudgedIntervalDoc


@dataclass(frozen=True)
class GateRule:
    """The gate's config: each field takes the setting it names (the worker builds it once per job with
    `Settings.config(GateRule)`); the defaults and their reasons live with the settings alone."""

    min_improvement: float = field(metadata={"setting": "min_improvement"})
    confidence: float = field(metadata={"setting": "gate_confidence"})
    samples: int = field(metadata={"setting": "gate_bootstrap_samples"})
    min_pairs: int = field(metadata={"setting": "min_heldout_pairs"})
    min_queries: int = field(metadata={"setting": "min_heldout_queries"})
    max_regression: float = field(metadata={"setting": "gate_max_regression"})
    seed: int = field(metadata={"setting": "seed"})
    slice_min_pairs: int = field(metadata={"setting": "gate_slice_min_pairs"})


@dataclass(frozen=True)
class PairedScores:
    """Champion and candidate scored on the same labelled pairs."""

    labels: Sequence[float]
    champion: Sequence[float]
    candidate: Sequence[float]
    queries: Sequence[str]
    slices: Sequence[str | None] | None = None  # each pair's slice, where pairs carry one

    @property
    def size(self) -> tuple[int, int]:
        return len(self.labels), len(set(self.queries))


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    refused: bool = False  # too little evidence to decide either way
    evidence: GateEvidence = field(default_factory=GateEvidence)  # intervals, sizes: stored with the version
    worse: bool = False  # significantly worse somewhere (held-out, the champion's frozen pairs, a slice)

    @property
    def screened(self) -> bool:
        """Passes the screen that admits a challenger: judged (not refused) and nowhere significantly
        worse. The screen keeps clearly worse models away from users; users decide which is better."""
        return not self.refused and not self.worse


def _intervals(comparison: PairedScores, rule: GateRule) -> dict[str, Interval]:
    return paired_bootstrap(
        comparison.labels,
        comparison.champion,
        comparison.candidate,
        comparison.queries,
        samples=rule.samples,
        confidence=rule.confidence,
        seed=rule.seed,
    )


def insufficient(comparison: PairedScores, rule: GateRule) -> str | None:
    """Why these held-out pairs cannot support a decision, or None if they can."""
    pairs, queries = comparison.size
    classes = len({label > 0.5 for label in comparison.labels})
    if pairs < rule.min_pairs or queries < rule.min_queries:
        return (
            f"held-out set too small to decide: {pairs} pairs from {queries} queries; "
            f"the gate needs at least {rule.min_pairs} pairs and {rule.min_queries} queries"
        )
    if classes < 2:
        return f"held-out set has one class only ({pairs} pairs): {METRICS.primary.label} is undefined"
    return None


def verdict(auc: Interval, rule: GateRule, size: str) -> tuple[bool, str]:
    """The three cases of the primary metric's gain interval (and an undefined one): (promote, reason)."""
    if auc.low is None or auc.high is None:
        return False, f"{METRICS.primary.label} change undefined on {size}"
    if auc.low > rule.min_improvement:
        return True, f"{auc.describe()} on {size}; lower bound clears +{rule.min_improvement} (clears the bar)"
    if auc.high < 0:
        return False, f"{auc.describe()} on {size}; the whole interval lies below 0 (significantly worse)"
    return False, f"{auc.describe()} on {size}; lower bound does not clear +{rule.min_improvement} (within the noise)"


def _subset(comparison: PairedScores, keep: list[int]) -> PairedScores:
    return PairedScores(
        [comparison.labels[i] for i in keep],
        [comparison.champion[i] for i in keep],
        [comparison.candidate[i] for i in keep],
        [comparison.queries[i] for i in keep],
    )


def judged_slices(comparison: PairedScores, rule: GateRule) -> dict[str, PairedScores]:
    """The slices with enough held-out pairs, both classes and `min_queries` queries to be judged alone."""
    if comparison.slices is None:
        return {}
    members: dict[str, list[int]] = {}
    for i, name in enumerate(comparison.slices):
        if name is not None:
            members.setdefault(name, []).append(i)
    judged = {}
    for name, keep in sorted(members.items()):
        part = _subset(comparison, keep)
        if len(keep) >= rule.slice_min_pairs and insufficient(part, rule) is None:
            judged[name] = part
    return judged


def slice_evidence(comparison: PairedScores, rule: GateRule) -> tuple[dict[str, JudgedIntervalDoc], list[str]]:
    """Per-slice ROC-AUC intervals (Bonferroni over the judged slices) and the slices significantly worse."""
    parts = judged_slices(comparison, rule)
    if not parts:
        return {}, []
    confidence = 1 - (1 - rule.confidence) / len(parts)
    found: dict[str, JudgedIntervalDoc] = {}
    worse: list[str] = []
    for name, part in parts.items():
        auc = paired_bootstrap(part.labels, part.champion, part.candidate, part.queries, samples=rule.samples,
                               confidence=confidence, seed=rule.seed)[METRICS.primary.name]  # fmt: skip
        found[name] = auc.on(*part.size)
        if auc.high is not None and auc.high < 0:
            worse.append(name)
    return found, worse


def _frozen_regression(reference: PairedScores | None, rule: GateRule, evidence: GateEvidence) -> str | None:
    if reference is None or len({label > 0.5 for label in reference.labels}) < 2:
        return None
    frozen = _intervals(reference, rule)[METRICS.primary.name]
    evidence["reference"] = frozen.on(*reference.size)
    if frozen.high is not None and frozen.high < -rule.max_regression:
        return (
            f"on the champion's frozen held-out pairs {frozen.describe()} lies wholly below "
            f"-{rule.max_regression}: the new feedback contradicts what the champion learned"
        )
    return None


def decide_promotion(
    heldout: PairedScores,
    rule: GateRule,
    reference: PairedScores | None = None,
    fairness: dict[str, object] | None = None,
) -> GateDecision:
    """`heldout`: held-out pairs neither model trained on (where known). `reference`: the champion's
    frozen held-out pairs, if any. `fairness`: what was left out and whether the champion may have seen
    some pairs (said in the reason)."""
    pairs, queries = heldout.size
    evidence = GateEvidence(heldout_pairs=pairs, heldout_queries=queries, rule=dict(rule.__dict__))
    note = ""
    if fairness:
        evidence["fairness"] = fairness
        if fairness.get("champion_may_have_seen"):
            note = "; the champion may have trained on some of these held-out pairs (an earlier split)"
    refusal = insufficient(heldout, rule)
    if refusal is not None:
        return GateDecision(False, refusal + note, refused=True, evidence=evidence)
    intervals = _intervals(heldout, rule)
    evidence["intervals"] = {name: interval.as_dict() for name, interval in intervals.items()}
    regression = _frozen_regression(reference, rule, evidence)
    if regression is not None:
        return GateDecision(False, regression + note, evidence=evidence, worse=True)
    evidence["slices"], worse = slice_evidence(heldout, rule)
    auc = intervals[METRICS.primary.name]
    promote, reason = verdict(auc, rule, f"{pairs} pairs / {queries} queries")
    if worse:
        shown = ", ".join(f"{name} {evidence['slices'][name]['delta']:+.4f}" for name in worse)
        worse_reason = f"{reason}, but significantly worse on slice(s) {shown} ({METRICS.primary.label})"
        return GateDecision(False, worse_reason + note, evidence=evidence, worse=True)
    below = auc.high is not None and auc.high < 0
    return GateDecision(promote, reason + note, evidence=evidence, worse=below)
