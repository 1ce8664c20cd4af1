"""A Celery worker whose training cap samples with a recency weight instead of keeping the newest pairs:
the other arm of `bench/closed_loop.py --sampling recency`. Benchmark only; the worker's own rule is
`eduranker.pipeline.bounds.newest`.

With TRAIN_MAX_PAIRS = n, the snapshot reads until the training side holds READ_FACTOR × n pairs (or all
there are), and the job trains on n of them drawn without replacement, the pair of recency rank i (0 =
newest) with weight 0.5 ** (i / n): the newest n pairs carry half of the weight, older ones the rest.

    python bench/sampling_worker.py -A worker worker -Q training -c 1   # celery's own arguments
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import worker.stages as stages  # noqa: E402
from eduranker.pipeline.bounds import Bounded, newest  # noqa: E402
from eduranker.pipeline.pairs import Pair  # noqa: E402
from eduranker.settings import Settings  # noqa: E402

READ_FACTOR = 4
TRAIN_CAP = Settings.from_env().train_max_pairs  # the worker's own settings, read as it reads them
_read_newest_first = stages.read_newest_first


def recency_sample(pairs: list[Pair], cap: int, seed: int = 0) -> Bounded:
    """`cap` pairs drawn without replacement with weight 0.5 ** (rank / cap), in their input order."""
    if cap <= 0 or len(pairs) <= cap:
        return newest(pairs, cap)
    ranked = sorted(range(len(pairs)), key=lambda i: (pairs[i].feedback_at, pairs[i].inference_id), reverse=True)
    weights = 0.5 ** (np.arange(len(ranked)) / cap)
    # Efraimidis-Spirakis: the cap largest u ** (1 / w) are a weighted sample without replacement.
    keys = np.random.default_rng(seed).random(len(ranked)) ** (1.0 / weights)
    chosen = sorted(ranked[int(k)] for k in np.argsort(-keys)[:cap])
    kept = [pairs[i] for i in chosen]
    return Bounded(kept, cap, len(pairs), min(p.feedback_at for p in kept))


def _capped(pairs: list[Pair], cap: int) -> tuple[list[Pair], dict[str, Any]]:
    bounded = recency_sample(pairs, cap) if cap == TRAIN_CAP else newest(pairs, cap)  # the gate keeps its rule
    return bounded.kept, {**bounded.report(), "rule": "recency-weighted" if cap == TRAIN_CAP else "newest"}


def _read_more(units: Any, rest: Any, builder: Any, train_cap: int, gate_cap: int) -> Any:
    return _read_newest_first(units, rest, builder, train_cap * READ_FACTOR, gate_cap)


stages._capped = _capped  # type: ignore[assignment]
stages.read_newest_first = _read_more  # type: ignore[assignment]

if __name__ == "__main__":
    from celery.__main__ import main

    sys.argv[0] = "celery"
    sys.exit(main())  # type: ignore[func-returns-value]
