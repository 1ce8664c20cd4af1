"""Switching the champion safely: check the artifacts, switch the registry, then point the symlink.

The registry (`eduranker.store.versions`) is the truth; `MODELS_DIR/champion` follows it. Every switch
writes the registry first and the pointer second, and `reconcile` (run at worker start, on producer
ticks and by every CLI command) repairs a pointer left behind by a crash between the two.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Any

from eduranker import models_dir
from eduranker.errors import UnknownVersion
from eduranker.records import ChallengeOutcome
from eduranker.store import challenge, versions
from eduranker.store.types import Db

log = logging.getLogger(__name__)


def _point(models: str | Path, name: str, target: str | None) -> None:
    if target is None:
        models_dir.remove_pointer(models, name)
    elif models_dir.champion_target(models, name) != target:
        models_dir.point_champion(models, target, name)


def _follow(db: Db, models: str | Path) -> str | None:
    """Point `champion` (and `previous`, the holdback's model, and `challenger`, a running challenge's)
    at what the registry names now.

    The registry is read under a lock on the models folder, so of two processes switching at once the
    one that points last also read last: the pointer ends on the newest record, never an older one.
    A failure here is logged and repaired by the next reconcile.
    """
    version = None
    try:
        Path(models).mkdir(parents=True, exist_ok=True)
        with open(Path(models) / ".champion.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record, running = challenge.read(db)
            version = record.version
            _point(models, models_dir.POINTER, version)
            for name, target in ((models_dir.PREVIOUS, record.previous),
                                 (models_dir.CHALLENGER, running.version if running else None)):  # fmt: skip
                try:
                    _point(models, name, target)
                except UnknownVersion:  # its folder is gone: the champion serves everyone
                    models_dir.remove_pointer(models, name)
    except (OSError, UnknownVersion):
        log.exception("registry names %s but the pointer could not be switched; reconcile will retry", version)
    return version


def promote(
    db: Db,
    models: str | Path,
    version: str,
    *,
    by: str,
    reason: str,
    expected_champion: str | None | object = ...,
    force: bool = False,
) -> str | None:
    """Promote `version` (its artifacts checked first); returns the previous champion."""
    models_dir.check_loadable(models, version)
    previous = versions.promote(db, version, by=by, reason=reason, expected_champion=expected_champion, force=force)
    _follow(db, models)
    return previous


def rollback(db: Db, models: str | Path, *, by: str, reason: str) -> tuple[str, str]:
    """Restore the previous champion (its artifacts checked before anything changes)."""
    record, target = versions.rollback_target(db)
    models_dir.check_loadable(models, target)
    demoted, restored = versions.rollback(db, by=by, reason=reason, seen=record)
    _follow(db, models)
    return demoted, restored


def _present(models: str | Path, version: str | None) -> str | None:
    return version if version and models_dir.version_dir(models, version).is_dir() else None


def reconcile(db: Db, models: str | Path, *, by: str) -> None:
    """Make statuses and the pointers agree with the registry's champion and challenge; each repair is
    logged (no caller acts on one, so nothing is returned)."""
    synced = versions.sync_statuses(db, by=by) + challenge.sync_challenger(db, by=by)
    record, running = challenge.read(db)
    pointer = models_dir.champion_target(models)
    previous = models_dir.champion_target(models, models_dir.PREVIOUS)
    challenger = models_dir.champion_target(models, models_dir.CHALLENGER)
    repaired = (
        pointer != record.version
        or previous != _present(models, record.previous)
        or challenger != _present(models, running.version if running else None)
    )
    if repaired:
        log.warning("champion pointer named %s but the registry names %s; repairing", pointer, record.version or "none")
        _follow(db, models)
    if synced:
        log.warning("model_versions statuses brought in step with the registry: %s", ", ".join(synced))


def start_challenge(
    db: Db, models: str | Path, version: str, *, against: str | None, by: str, reason: str
) -> str | None:
    """Make `version` (its artifacts checked first) the challenger of `against`, and point
    `models/challenger` at it; returns the challenger it replaced, if any."""
    models_dir.check_loadable(models, version)
    _, replaced = challenge.start(db, version, against=against, by=by, reason=reason)
    _follow(db, models)
    return replaced.version if replaced and replaced.version != version else None


def end_challenge(
    db: Db,
    models: str | Path,
    seen: challenge.Challenge,
    *,
    promote: bool,
    outcome: ChallengeOutcome,
    reason: str,
    figures: dict[str, Any],
    by: str,
) -> None:
    """End the challenge `seen` (only that one, and only if no champion switch happened since it was
    judged): its challenger becomes the champion (artifacts checked first) or is rejected."""
    if promote:
        models_dir.check_loadable(models, seen.version)
    challenge.end(db, seen, promote=promote, outcome=outcome, reason=reason, figures=figures, by=by)
    _follow(db, models)
