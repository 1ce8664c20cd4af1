"""What `GET /api/reranking/info-modele` says: the version serving, read from the reranker's public
attributes, and its metrics and gate evidence, read from the version folder's `training_metadata.json`
(once per version: a folder's files never change after registration)."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eduranker.models_dir import version_dir
from eduranker.serving import ChampionReranker

log = logging.getLogger(__name__)

_UNSEEN = object()


@functools.lru_cache(maxsize=16)
def version_metadata(models_dir: str, version: str) -> dict[str, Any]:
    """The version's training metadata, {} where its folder has none or it does not parse."""
    path = version_dir(models_dir, version) / "training_metadata.json"
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("no readable metadata for %s (%s)", version, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


class ServingInfo:
    """Follows `ranker.version` as requests see it, noting when each version first served here."""

    def __init__(self, ranker: ChampionReranker, now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.ranker, self._now = ranker, now
        self._lock = threading.Lock()
        self._seen: object = _UNSEEN
        self._since: datetime | None = None

    def observe(self, version: str | None) -> None:
        if version != self._seen:  # a cheap check first: taken on every request
            with self._lock:
                if version != self._seen:
                    self._seen, self._since = version, self._now()

    def describe(self) -> dict[str, Any]:
        ranker = self.ranker
        version = ranker.version
        self.observe(version)
        meta = version_metadata(str(Path(ranker.models_dir)), version) if version else {}
        return {
            "version": version,
            "serving_since": self._since.isoformat() if self._since else None,
            "variant": ranker.variant,
            "base_model": ranker.base_model,
            "models_dir": str(ranker.models_dir),
            "compare": ranker.compare,
            "share": ranker.share,
            "last_error": ranker.last_error,
            "metrics": meta.get("metrics"),
            "gate": meta.get("gate"),
            "gate_reason": meta.get("gate_reason"),
            "job_id": meta.get("job_id"),
            "challenge": self._challenge(),
        }

    def _challenge(self) -> dict[str, Any] | None:
        """The challenger this reranker interleaves with the champion (models/challenger), if any."""
        challenger = self.ranker.challenger
        if challenger is None:
            return None
        meta = version_metadata(str(Path(self.ranker.models_dir)), challenger)
        return {"version": challenger, "share": self.ranker.challenge_share, "gate_reason": meta.get("gate_reason"),
                "job_id": meta.get("job_id")}  # fmt: skip
