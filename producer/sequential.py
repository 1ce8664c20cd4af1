"""An always-valid sequential test on clustered data: the guard may look as often as it likes.

The estimate is a ratio of per-cluster sums (like rate = likes / feedbacks per user; mean interleaving
credit = credits / impressions per user), so its variance is the cluster-robust (sandwich) variance of a
ratio estimator: reactions of one user are correlated, users are not. The test is the mixture
sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh ("Always valid inference:
bringing sequential analysis to A/B testing", 2015; "Peeking at A/B tests", KDD 2017) with a normal
mixture of variance `tau2` over the effect, applied to the estimate and its variance: its likelihood
ratio is a (super)martingale under "no difference", so by Ville's inequality it ever reaches 1/alpha
with probability at most alpha, however many times it is evaluated. The matching always-valid
confidence sequence is the normal-mixture boundary of Howard, Ramdas, McAuliffe and Sekhon
("Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021).
Pure functions: no database, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Clustered:
    """A ratio estimate over clusters and its cluster-robust variance."""

    estimate: float
    variance: float
    clusters: int
    units: float  # the denominator's total (feedbacks, impressions)


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float]) -> Clustered:
    """sum(numerators) / sum(denominators), with the variance of the linearised ratio over clusters.

    Var = G / (G - 1) * sum_c (num_c - r * den_c)^2 / (sum den)^2 (the small-sample factor of the usual
    cluster-robust estimator). One cluster or none: the variance is infinite (nothing to judge yet).
    """
    total = float(sum(denominators))
    clusters = len(denominators)
    if total <= 0:
        return Clustered(0.0, math.inf, clusters, total)
    r = float(sum(numerators)) / total
    if clusters < 2:
        return Clustered(r, math.inf, clusters, total)
    spread = sum((n - r * d) ** 2 for n, d in zip(numerators, denominators, strict=True))
    return Clustered(r, clusters / (clusters - 1) * spread / total**2, clusters, total)


def difference(a: Clustered, b: Clustered) -> Clustered:
    """a - b for independent groups of clusters."""
    return Clustered(a.estimate - b.estimate, a.variance + b.variance, a.clusters + b.clusters, a.units + b.units)


def log_mixture_ratio(estimate: float, variance: float, tau2: float) -> float:
    """log of the mSPRT statistic: the normal(0, tau2) mixture of likelihood ratios against 0."""
    if not math.isfinite(variance) or variance <= 0:
        return 0.0
    v = variance
    return 0.5 * math.log(v / (v + tau2)) + tau2 * estimate * estimate / (2 * v * (v + tau2))


def radius(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid confidence sequence: exactly where the mSPRT reaches 1/alpha."""
    if not math.isfinite(variance) or variance <= 0:
        return math.inf
    v = variance
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))


@dataclass(frozen=True)
class Sequential:
    estimate: float
    low: float  # the always-valid interval of the effect at this look
    high: float
    log_ratio: float  # evidence so far: log of the mSPRT statistic
    threshold: float  # log(1 / alpha): the evidence a decision needs

    @property
    def worse(self) -> bool:
        """The whole interval lies below zero: the first side is worse, at the stated error rate."""
        return self.high < 0


def sequential_test(effect: Clustered, *, tau2: float, alpha: float) -> Sequential:
    """Where the effect stands now. `worse` is the one-sided decision; the two-sided mixture's bound
    is used for it, so its error rate is at most alpha (conservative by up to a factor of two)."""
    half = radius(effect.variance, tau2, alpha)
    return Sequential(
        effect.estimate,
        effect.estimate - half,
        effect.estimate + half,
        log_mixture_ratio(effect.estimate, effect.variance, tau2),
        math.log(1 / alpha),
    )
