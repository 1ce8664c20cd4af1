"""The online guard with anonymous traffic: equal models, 30% of the feedback from anonymous searches.

    .venv/bin/python bench/online_anonymous.py [--runs 300] [--seed 0]

The model of bench/online_decisions.py (users arriving at random, 5 to 20 reactions each over one to
three sessions, a like propensity each, mean 0.6), a 20% holdback, a look every minute for 30 days; 70%
of the feedback from users, 30% from anonymous searches (1 to 3 reactions each) liked at 0.45. The
champion and its holdback are equally good: every rollback is false. Two rules side by side:
- before: a request without a key never held back (all anonymous traffic on the champion's side) and
  each anonymous search a cluster of its own;
- now: a request without a key drawn at random with the holdback's share (`ChampionReranker`) and
  anonymous searches clustered by the hour they were made in (`producer.online_refresh.cluster_key`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import online_decisions  # noqa: E402
from online_decisions import (  # noqa: E402
    HOLDBACK_TAU,
    MIN_CLUSTERS,
    MIN_FEEDBACK,
    PER_MINUTE,
    Events,
    first_rollback,
    holdback_events,
    np_radius,
    rate,
    ratio,
    running,
)


def _anonymous_events(rng: np.random.Generator, minutes: int, share: float, drawn: bool, first_id: int):
    """Anonymous searches: 30% of the site's feedback (1 to 3 reactions a search), liked at 0.45 where
    users like at 0.6 on average. `drawn`: held back at random with the holdback's share and clustered
    by the hour (the serving and guard rule); else never held back, each search a cluster of its own
    (the rule before). Returns (the champion's side, the holdback's side) as (cluster, minute, likes, n)."""
    searches = rng.poisson(0.3 * PER_MINUTE * minutes / 2.0)
    minute = np.sort(rng.uniform(0, minutes, searches))
    size = rng.integers(1, 4, searches)
    likes = rng.binomial(size, 0.45)
    held = rng.random(searches) < share if drawn else np.zeros(searches, bool)
    cluster = first_id + ((minute // 60).astype(np.int64) if drawn else np.arange(searches))
    return [(cluster[side], minute[side], likes[side], size[side]) for side in (~held, held)]


def _merged(e: Events, extra: tuple[np.ndarray, ...]) -> Events:
    """Users' events and anonymous ones, ordered by cluster and then time (as `running` needs)."""
    cluster, minute, likes, size = extra
    user = np.r_[e.user, cluster]
    when = np.r_[e.minute, minute]
    order = np.lexsort((when, user))
    return Events(user[order], when[order], np.r_[e.num, likes][order], np.r_[e.den, size][order],
                  np.r_[e.feedback, size][order])  # fmt: skip


def anonymous_run(rng: np.random.Generator, minutes: int, share: float, drawn: bool) -> int | None:
    """Equal models; 70% of the feedback from users (like rate 0.6 on average), 30% anonymous (0.45):
    the minute the sequential holdback test rolls back, if it does."""
    saved, online_decisions.PER_MINUTE = PER_MINUTE, 0.7 * PER_MINUTE  # users give 70% of the site's feedback
    try:
        champ_e, held_e = holdback_events(rng, minutes, share, 0.0)
    finally:
        online_decisions.PER_MINUTE = saved
    first_id = int(max(champ_e.user.max(initial=0), held_e.user.max(initial=0))) + 1
    extra = _anonymous_events(rng, minutes, share, drawn, first_id)
    champ, held = (running(_merged(e, x), minutes) for e, x in zip((champ_e, held_e), extra, strict=True))
    (rc, vc), (rh, vh) = ratio(champ), ratio(held)
    ready = (np.minimum(champ["den"], held["den"]) >= MIN_FEEDBACK) & (
        np.minimum(champ["clusters"], held["clusters"]) >= MIN_CLUSTERS
    )
    return first_rollback(rc - rh + np_radius(vc + vh, HOLDBACK_TAU**2), ready)


def anonymous_traffic(rng: np.random.Generator, runs: int) -> None:
    minutes = 30 * 1440
    print("4. equal models, 30 days checked every minute, a 20% holdback; 30% of the feedback anonymous and liked")
    print(f"   at 0.45 (users: 0.6 on average); false rollbacks ({runs} runs each)")
    for label, drawn in (("anonymous never held back, a cluster each (before)", False),
                         ("anonymous drawn into the holdback, clustered by hour", True)):  # fmt: skip
        hits = [anonymous_run(rng, minutes, 0.2, drawn) for _ in range(runs)]
        days = [h / 1440 for h in hits if h is not None]
        when = f"; median day {np.median(days):.0f}" if days else ""
        print(f"   {label:<56} {rate(sum(h is not None for h in hits), runs)}{when}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    anonymous_traffic(np.random.default_rng(args.seed), args.runs)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
