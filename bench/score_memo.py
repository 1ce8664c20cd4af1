"""Each version scores one request's texts once in a benchmark process (`bench/closed_loop.py`).

A simulated search repeats: the closed loop serves 587 queries, each with the same candidates, for
thousands of searches a challenge. A version's scores for one encoded request are a pure function of
the two (the version's folder never changes once written), so a repeat is read from here instead of
being computed again. Everything else a request does is the search API's own: `ChampionReranker`
follows the pointers, draws, interleaves and tags as it would. `install()` memoises
`LoadedModel.score_encoded` for this process; `--no-memo` in the closed loop leaves it out.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

from eduranker.pipeline.encoding import EncodedPairs
from eduranker.serving.loaded import LoadedModel


class ScoreMemo:
    def __init__(self) -> None:
        self.scores: dict[tuple[str | None, str, str], np.ndarray] = {}
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def key(self, loaded: LoadedModel, encoded: EncodedPairs) -> tuple[str | None, str, str]:
        digest = hashlib.blake2b(digest_size=16)
        for part in (encoded.ids, encoded.starts, encoded.type_ids):
            digest.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
        return loaded.version, loaded.variant, digest.hexdigest()

    def install(self) -> None:
        unmemoised = LoadedModel.score_encoded
        memo = self

        def score_encoded(loaded: LoadedModel, encoded: EncodedPairs) -> Any:
            key = memo.key(loaded, encoded)
            with memo._lock:
                found = memo.scores.get(key)
                memo.hits += found is not None
            if found is not None:
                return found.copy()
            scores = unmemoised(loaded, encoded)
            with memo._lock:
                memo.scores[key] = scores.copy()
                memo.misses += 1
            return scores

        LoadedModel.score_encoded = score_encoded  # type: ignore[method-assign]
