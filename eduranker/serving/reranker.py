"""`ChampionReranker`: reranks with the champion and follows `MODELS_DIR/champion` while serving.

A watcher thread stats the pointer every `poll_seconds`. When it names another version, that version is
loaded beside the current one, checked on a probe pair, and swapped in with one reference assignment:
a request takes the reference once, so requests in flight finish on the model they started with, and
the old model is freed when the last of them ends. A version that fails to load is logged and not
swapped in (the current one keeps serving); it is tried again when the pointer changes again.

While a challenge runs (`MODELS_DIR/challenger` exists), a `challenge_share` of requests (all, by
default) gets a team-draft interleaving of the champion's and the challenger's rankings: the producer
decides the challenge on what users do with those lists (docs/online.md). Each shown document carries
the version that contributed it: the API writes `result.inference_fields()` on the inferences.

`index` (a name of INDEXES, docs/indexes.md): the search index this reranker serves; it follows that
index's folder, MODELS_DIR/<index>, and names the index in each result's inference fields.

Comparing with the previous champion (`MODELS_DIR/previous`), for the producer's online guard:
`compare="holdback"` serves a `share` of users (stable per `key`, the hash salted with the champion's
version, so each promotion draws a new group; a request without a key is drawn at random with the same
share) wholly with the previous champion; `compare="interleave"` serves a `share` of requests a
team-draft interleaving of both versions' rankings, each document tagged with the version that
contributed it.

`variant` (the API passes SERVING_VARIANT): how each version is served, `eduranker.variants`. int8
loads the file the worker wrote beside the version (never converted here); a version without it is
served in fp32, with a warning in the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eduranker.indexes import DEFAULT, Index, name_problem
from eduranker.models_dir import CHALLENGER, POINTER, PREVIOUS, champion_target, version_dir
from eduranker.serving.interleave import team_draft
from eduranker.serving.loaded import LoadedModel, load_checked, score_both
from eduranker.variants import DEFAULT_SERVING_VARIANT, variant_problem

log = logging.getLogger(__name__)

# A request's documents are scored in length-sorted micro-batches of this many: at 20 documents, 8 took
# the bf16 p50 from 2.5x to 4.2x CrossEncoder.predict's (bench/serving_latency.py, docs/performance.md):
# each batch pads only to its own longest pair instead of the request's (bench: the sides NAME:8).
SERVING_BATCH_SIZE = 8


@dataclass(frozen=True)
class RerankResult:
    version: str | None  # the champion (or, for a held-back request, the previous champion); None: the base model
    scores: list[float]  # aligned with the documents given
    order: list[int]  # indices of the documents, best first
    holdback: bool  # served by the previous champion, for the live comparison
    versions: list[str | None] = field(default_factory=list)  # aligned with `order`: who contributed each
    interleaved: bool = False  # a team-draft interleaving of two versions' lists
    challenger: str | None = None  # the challenger interleaved into this list, if any
    index: str = DEFAULT  # the search index whose reranker served it (eduranker/indexes.py)

    def inference_fields(self) -> list[dict[str, object]]:
        """What the API writes on the inference of each shown document, aligned with `order`: the
        document `documents[order[i]]` gets `inference_fields()[i]` (docs/collections.md)."""
        # Another index than the default names itself: its base model's results (`model_version` null)
        # are then told from another index's base (docs/indexes.md).
        tag = {} if self.index == DEFAULT else {"index": self.index}
        return [
            {"rank": rank, "score": self.scores[doc], "model_version": version, **tag}
            for rank, (doc, version) in enumerate(zip(self.order, self.versions, strict=True), start=1)
        ]


@dataclass(frozen=True)
class _Serving:
    champion: LoadedModel
    previous: LoadedModel | None
    challenger: LoadedModel | None = None


class ChampionReranker:
    def __init__(
        self,
        models_dir: str | Path,
        *,
        base_model: str | None = None,
        poll_seconds: float = 5.0,
        holdback: float = 0.0,
        compare: str | None = None,
        share: float = 0.0,
        seed: int | None = None,
        device: str | torch.device | None = None,
        max_length: int = 256,
        batch_size: int = SERVING_BATCH_SIZE,
        variant: str = DEFAULT_SERVING_VARIANT,
        challenge_share: float = 1.0,
        index: str = DEFAULT,
    ):
        self.compare, self.share = _comparison(holdback, compare, share)
        if not 0.0 <= challenge_share <= 1.0:
            raise ValueError(f"challenge_share must be in [0, 1], got {challenge_share}")
        self.challenge_share = challenge_share  # requests interleaved with a running challenge's challenger
        problem = name_problem(index)
        if problem:
            raise ValueError(f"index {index!r}: {problem}")
        # `models_dir` is MODELS_DIR; index `fr` follows the pointers of its own folder, MODELS_DIR/fr.
        self.index = index
        self.models_dir, self.base_model = Path(Index(index).models_dir(str(models_dir))), base_model
        self.poll_seconds = poll_seconds
        self.holdback = self.share if self.compare == HOLDBACK else 0.0
        self._rng = random.Random(seed)  # the interleaving's share and coins (no need to be unpredictable)
        self._rng_lock = threading.Lock()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_length, self.batch_size = max_length, batch_size
        problem = variant_problem(variant)
        if problem:
            raise ValueError(f"variant {variant!r}: {problem}")
        self.variant = variant  # asked for (SERVING_VARIANT); each LoadedModel.variant says what serves
        self.last_error: str | None = None  # why the newest pointer target is not serving
        self._failed: tuple[str | None, str | None, str | None] | None = None
        self._stop = threading.Event()
        self._serving = self._load(self._targets(), current=None)
        self._watcher = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
        self._watcher.start()

    @property
    def version(self) -> str | None:
        return self._serving.champion.version

    @property
    def challenger(self) -> str | None:
        """The running challenge's challenger this reranker interleaves, if one is loaded."""
        challenger = self._serving.challenger
        return challenger.version if challenger is not None else None

    def rerank(self, query: str, documents: Sequence[str], *, key: str | None = None) -> RerankResult:
        result = self._rerank(query, documents, key)
        return result if self.index == DEFAULT else dataclasses.replace(result, index=self.index)

    def _rerank(self, query: str, documents: Sequence[str], key: str | None) -> RerankResult:
        """Scores and order for `documents`. While a challenge runs, a `challenge_share` of requests gets
        the champion's and the challenger's lists interleaved. Otherwise `key` (a user id, say) puts a
        stable holdback share of users on the previous champion (a request without a key is drawn at
        random, so anonymous traffic lands on both sides alike); with interleaving, a share of requests
        gets both versions' lists interleaved. `versions` names the contributor of each document in
        `order`; `inference_fields()` is what to write on each shown result."""
        serving = self._serving  # one read: this request stays on these models whatever swaps meanwhile
        previous, challenger = serving.previous, serving.challenger
        if challenger is not None and len(documents) > 1 and self._draw() < self.challenge_share:
            return _interleaved(serving.champion, challenger, query, documents, self._coins(), challenge=True)
        if previous is not None and self.compare == INTERLEAVE and len(documents) > 1 and self._draw() < self.share:
            return _interleaved(serving.champion, previous, query, documents, self._coins())
        salt = serving.champion.version or "base"  # a new holdback group for every champion
        draw = _bucket(f"{salt}\x00{key}") if key is not None else self._draw()
        held = previous is not None and self.holdback > 0 and draw < self.holdback
        loaded = previous if held and previous is not None else serving.champion
        scores = loaded.score(query, documents) if documents else np.zeros(0)
        order = _ranking(scores)
        return RerankResult(loaded.version, [float(s) for s in scores], order, held, [loaded.version] * len(order))

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def _coins(self) -> random.Random:
        with self._rng_lock:
            return random.Random(self._rng.getrandbits(64))

    def close(self) -> None:
        self._stop.set()
        self._watcher.join()

    # Following the pointer.
    def _targets(self) -> tuple[str | None, str | None, str | None]:
        at = self.models_dir
        return champion_target(at, POINTER), champion_target(at, PREVIOUS), champion_target(at, CHALLENGER)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def refresh(self) -> bool:
        """Check the pointer now; True if a new champion was swapped in."""
        targets = self._targets()
        now = self._serving
        current = tuple(m.version if m else None for m in (now.champion, now.previous, now.challenger))
        if targets == current or targets == self._failed:
            return False
        try:
            serving = self._load(targets, current=self._serving)
        except Exception as exc:  # a broken version must never take the current one down
            self._failed, self.last_error = targets, f"{targets[0]}: {type(exc).__name__}: {exc}"
            log.error("champion %s not loaded; %s keeps serving (%s)", targets[0], current[0], self.last_error)
            return False
        self._serving, self._failed, self.last_error = serving, None, None
        log.info("now serving %s (holdback: %s, challenger: %s)", targets[0] or "the base model", *targets[1:])
        # Reference counting frees the old model here (no cycle holds it; tests/test_serving.py checks with
        # the collector off): a full gc.collect() stalled every request thread, 0.3 s in a test process.
        del serving
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True

    def _load(self, targets: tuple[str | None, str | None, str | None], current: _Serving | None) -> _Serving:
        champion_version, previous_version, challenger_version = targets
        loaded = () if current is None else (current.champion, current.previous, current.challenger)
        reuse = {m.version: m for m in loaded if m}
        champion = reuse.get(champion_version) or self._load_version(champion_version)
        reuse[champion.version] = champion
        previous = self._optional(previous_version, reuse, "holdback") if self.share > 0 else None
        challenger = self._optional(challenger_version, reuse, "challenger") if self.challenge_share > 0 else None
        return _Serving(champion, previous, challenger)

    def _optional(self, version: str | None, reuse: dict[str | None, LoadedModel], role: str) -> LoadedModel | None:
        if version is None:
            return None
        try:
            return reuse.get(version) or self._load_version(version)
        except Exception:  # no comparison rather than no champion
            log.exception("%s model %s not loaded; the champion serves every request", role, version)
            return None

    def _load_version(self, version: str | None) -> LoadedModel:
        if version is None:
            if self.base_model is None:
                raise FileNotFoundError(f"no champion under {self.models_dir} and no base_model given")
            path: str | Path = self.base_model
        else:
            path = version_dir(self.models_dir, version)
        return load_checked(path, version, self.device, self.max_length, self.batch_size, self.variant)


HOLDBACK, INTERLEAVE = "holdback", "interleave"


def _comparison(holdback: float, compare: str | None, share: float) -> tuple[str | None, float]:
    """(compare, share) from the arguments; `holdback=x` is `compare="holdback", share=x`."""
    if not 0.0 <= holdback < 1.0:
        raise ValueError(f"holdback must be in [0, 1), got {holdback}")
    if holdback > 0:
        if compare not in (None, HOLDBACK) or share not in (0.0, holdback):
            raise ValueError("give either holdback=x or compare=... with share=x, not both")
        return HOLDBACK, holdback
    if compare not in (None, HOLDBACK, INTERLEAVE):
        raise ValueError(f"compare must be 'holdback' or 'interleave', got {compare!r}")
    limit = 1.0 if compare == INTERLEAVE else 1.0 - 1e-12  # a holdback of everyone would be no champion
    if not 0.0 <= share <= limit:
        raise ValueError(f"share must be in [0, 1{']' if compare == INTERLEAVE else ')'}, got {share}")
    return compare, share if compare else 0.0


def _ranking(scores: np.ndarray) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _interleaved(
    champion: LoadedModel,
    other: LoadedModel,
    query: str,
    documents: Sequence[str],
    coins: random.Random,
    *,
    challenge: bool = False,
) -> RerankResult:
    """Both versions score the documents (`score_both`: one encoding where they read text alike, the
    second scoring beside the first where a core is free); the list is their team draft. Each
    document's score is the one its contributing version gave it."""
    mine, theirs = score_both(champion, other, query, documents)
    order, teams = team_draft(_ranking(mine), _ranking(theirs), coins)
    by_doc = {doc: team for doc, team in zip(order, teams, strict=True)}
    scores = [float(theirs[i] if by_doc[i] else mine[i]) for i in range(len(documents))]
    tags = [other.version if team else champion.version for team in teams]
    return RerankResult(champion.version, scores, order, False, tags, interleaved=True,
                        challenger=other.version if challenge else None)  # fmt: skip


def _bucket(key: str) -> float:
    """A stable number in [0, 1) for a request key: the same user always lands on the same side."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def resident_memory_bytes() -> int:
    """This process's resident set (for tests and benchmarks of swaps)."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
