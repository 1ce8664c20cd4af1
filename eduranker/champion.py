"""Switching the champion safely: check the artifacts, switch the registry, then point the symlink.

The registry (`eduranker.store.versions`) is the truth; `MODELS_DIR/champion` follows it. Every switch
writes the registry first and the pointer second, and `reconcile` (run at worker start, on producer
ticks and by every CLI command) repairs a pointer left behind by a crash between the two.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from eduranker import models_dir
from eduranker.errors import Refused, UnknownVersion
from eduranker.store import versions
from eduranker.store.lease import LeaseFence
from eduranker.store.types import Db

log = logging.getLogger(__name__)


def _point(models: str | Path, name: str, target: str | None) -> None:
    if target is None:
        models_dir.remove_pointer(models, name)
    elif models_dir.champion_target(models, name) != target:
        models_dir.point_champion(models, target, name)


def _follow(db: Db, models: str | Path) -> str | None:
    """Point `champion` (and `previous`, the holdback's model) at what the registry names now.

    The registry is read under a lock on the models folder, so of two processes switching at once the
    one that points last also read last: the pointer ends on the newest record, never an older one.
    A failure here is logged and repaired by the next reconcile.
    """
    version = None
    try:
        Path(models).mkdir(parents=True, exist_ok=True)
        with open(Path(models) / ".champion.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = versions.read_champion(db)
            version = record.version
            _point(models, models_dir.POINTER, version)
            try:
                _point(models, models_dir.PREVIOUS, record.previous)
            except UnknownVersion:  # its folder is gone: no holdback, the champion serves everyone
                models_dir.remove_pointer(models, models_dir.PREVIOUS)
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


def rollback(
    db: Db,
    models: str | Path,
    *,
    by: str,
    reason: str,
    seen: versions.ChampionRecord | None = None,
    fence: LeaseFence | None = None,
) -> tuple[str, str]:
    """Restore the previous champion (its artifacts checked before anything changes).

    `seen`: the record a decision judged (the online guard's); the rollback applies to that exact
    record or not at all (ChampionChanged), never to a champion switched in since. `fence`: the
    lease the decision was made under (LeaseLapsed when it has moved on)."""
    record, target = versions.rollback_target(db) if seen is None else (seen, seen.previous)
    if target is None:
        raise Refused(f"champion {record.version} has no previous champion to roll back to")
    models_dir.check_loadable(models, target)
    demoted, restored = versions.rollback(db, by=by, reason=reason, seen=record, fence=fence)
    _follow(db, models)
    return demoted, restored


def reconcile(db: Db, models: str | Path, *, by: str) -> None:
    """Make statuses and the pointer agree with the registry's champion; each repair is logged (no
    caller acts on one, so nothing is returned)."""
    synced = versions.sync_statuses(db, by=by)
    record = versions.read_champion(db)
    pointer = models_dir.champion_target(models)
    previous = models_dir.champion_target(models, models_dir.PREVIOUS)
    previous_wanted = (
        record.previous if record.previous and models_dir.version_dir(models, record.previous).is_dir() else None
    )
    repaired = pointer != record.version or previous != previous_wanted
    if repaired:
        log.warning("champion pointer named %s but the registry names %s; repairing", pointer, record.version or "none")
        _follow(db, models)
    if synced:
        log.warning("model_versions statuses brought in step with the registry: %s", ", ".join(synced))
