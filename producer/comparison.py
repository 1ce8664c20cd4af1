"""The guard's comparison as running sums: what one impression adds, and the comparison from the sums.

`producer.guard.compare` judges a list of impressions. Kept incrementally (`producer/live_comparison.py`),
each impression instead adds a fixed set of integers (`contribution`) to its cluster's sums, and the same
`Comparison` is rebuilt from the per-cluster sums (`from_sums`): a changed impression is taken back out
by its last contribution and put in again with its new one. Generic over the two versions compared
(`first` is the side whose effect is measured: the champion against its holdback or a challenger).
Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from producer.guard import Comparison, Impression, LiveRate, Mode
from producer.sequential import difference, ratio_estimate

# Interleaved impressions (both versions served): count, credit (+1 first's documents drew more net
# likes, -1 fewer), wins, losses, ties, feedbacks. Impressions served by one version alone: count, likes,
# feedbacks, per side (a_: first, b_: second). Totals: likes and feedbacks of each version whatever served.
FIELDS = ("i_n", "i_credit", "i_win", "i_loss", "i_tie", "i_fb", "a_n", "a_likes", "a_fb", "b_n", "b_likes",
          "b_fb", "t1_likes", "t1_fb", "t2_likes", "t2_fb")  # fmt: skip
Sums = dict[str, int]


def contribution(imp: Impression, first: str, second: str) -> Sums:
    """What `imp` adds to its cluster's sums (only the non-zero fields)."""
    out: Sums = {}
    fb1, fb2 = imp.feedback(first), imp.feedback(second)
    if fb1:
        out.update(t1_likes=imp.likes.get(first, 0), t1_fb=fb1)
    if fb2:
        out.update(t2_likes=imp.likes.get(second, 0), t2_fb=fb2)
    if not fb1 + fb2:
        return out
    if first in imp.served and second in imp.served:
        mine, theirs = imp.net(first), imp.net(second)
        credit = (mine > theirs) - (mine < theirs)
        out.update(i_n=1, i_credit=credit, i_fb=fb1 + fb2)
        out["i_win" if credit > 0 else "i_loss" if credit < 0 else "i_tie"] = 1
    elif imp.served == frozenset({first}):
        out.update(a_n=1, a_likes=imp.likes.get(first, 0), a_fb=fb1)
    elif imp.served == frozenset({second}):
        out.update(b_n=1, b_likes=imp.likes.get(second, 0), b_fb=fb2)
    return {k: v for k, v in out.items() if v}


def add(into: Sums, sums: Mapping[str, int], sign: int = 1) -> None:
    for name, value in sums.items():
        into[name] = into.get(name, 0) + sign * value


def delta(old: Mapping[str, int], new: Mapping[str, int]) -> Sums:
    """new - old, non-zero fields only."""
    out: Sums = dict(new)
    add(out, old, -1)
    return {k: v for k, v in out.items() if v}


def totals(clusters: Iterable[Mapping[str, int]]) -> Sums:
    out: Sums = {}
    for sums in clusters:
        add(out, sums)
    return out


def from_sums(clusters: Iterable[Mapping[str, int]], first: str, second: str) -> Comparison:
    """The comparison `producer.guard.compare` makes of the impressions whose sums these are."""
    per = [dict(c) for c in clusters]
    total = totals(per)
    interleaved = [c for c in per if c.get("i_n")]
    if interleaved:
        effect = ratio_estimate([c.get("i_credit", 0) for c in interleaved], [c["i_n"] for c in interleaved])
        return Comparison(
            Mode.INTERLEAVE, first, second, total["i_n"], total.get("i_fb", 0),
            total.get("i_win", 0), total.get("i_loss", 0), total.get("i_tie", 0),
            effect=effect, clusters=(len(interleaved), len(interleaved)),
        )  # fmt: skip
    mine, theirs = [c for c in per if c.get("a_n")], [c for c in per if c.get("b_n")]
    if not theirs:
        return Comparison(Mode.NONE, first, second, total.get("a_n", 0), total.get("a_fb", 0))
    est_a = ratio_estimate([c.get("a_likes", 0) for c in mine], [c["a_fb"] for c in mine])
    est_b = ratio_estimate([c.get("b_likes", 0) for c in theirs], [c["b_fb"] for c in theirs])
    rate_a = LiveRate(first, total.get("a_fb", 0), total.get("a_likes", 0))
    rate_b = LiveRate(second, total.get("b_fb", 0), total.get("b_likes", 0))
    return Comparison(
        Mode.HOLDBACK, first, second, total.get("a_n", 0) + total["b_n"], rate_a.feedback + rate_b.feedback,
        rates=(rate_a, rate_b), effect=difference(est_a, est_b), clusters=(est_a.clusters, est_b.clusters),
    )  # fmt: skip
