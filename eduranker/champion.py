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
from eduranker.errors import Refused, UnknownVersion, VersionUnusable
from eduranker.store import challenge, versions
from eduranker.store.lease import LeaseFence
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
    """Promote `version` (its artifacts checked first, and again once the pointer follows the switch);
    returns the previous champion. The registry's switch is refused for a version retention pruned,
    and no prune pass may mark the version while it is being promoted (`versions.mark_promoting`)."""
    models_dir.check_loadable(models, version)
    previous = versions.record_promotion(
        db, version, by=by, reason=reason, expected_champion=expected_champion, force=force
    )
    _follow(db, models)
    problem = pointer_problem(db, models)
    if problem:
        log.error("after promoting %s: %s", version, problem)
        raise VersionUnusable(f"{version} is the registry's champion but {problem}")
    return previous


def pointer_problem(db: Db, models: str | Path) -> str | None:
    """What is wrong with `champion` for a search API that loads it now: a pointer that dangles, or a
    registry champion without loadable files. None when it loads (or the base model serves)."""
    record = versions.read_champion(db)
    link = Path(models) / models_dir.POINTER
    if link.is_symlink() and not link.resolve().is_dir():
        return f"the pointer {link} dangles (its folder is gone)"
    if record.version is None:
        return None
    try:
        models_dir.check_loadable(models, record.version)
    except (VersionUnusable, UnknownVersion) as exc:
        return f"the champion's artifacts are unusable ({exc}); promote or roll back to a version with files"
    return None


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
    demoted, restored = versions.record_rollback(db, by=by, reason=reason, seen=record, fence=fence)
    _follow(db, models)
    return demoted, restored


def _present(models: str | Path, version: str | None) -> str | None:
    return version if version and models_dir.version_dir(models, version).is_dir() else None


# The problem last logged per models folder: the producer reconciles every second, the log says it once.
_missing_logged: dict[str, str] = {}


def _report_missing(models: str, missing: str | None) -> None:
    """Nothing to point at: the pointer keeps what it serves, `eduranker status` shows the problem, and
    the log says it once per change."""
    if missing is None:
        _missing_logged.pop(models, None)
    elif _missing_logged.get(models) != missing:
        _missing_logged[models] = missing
        log.error("the registry's champion %s has no folder; the pointer is left as it is", missing)


def reconcile(db: Db, models: str | Path, *, by: str) -> None:
    """Make statuses and the pointers agree with the registry's champion and challenge; each repair is
    logged (no caller acts on one, so nothing is returned)."""
    synced = versions.sync_statuses(db, by=by) + challenge.sync_challenger(db, by=by)
    record, running = challenge.read(db)
    pointer = models_dir.champion_target(models)
    previous = models_dir.champion_target(models, models_dir.PREVIOUS)
    challenger = models_dir.champion_target(models, models_dir.CHALLENGER)
    champion_there = record.version is None or models_dir.version_dir(models, record.version).is_dir()
    repaired = (
        (pointer != record.version and champion_there)
        or previous != _present(models, record.previous)
        or challenger != _present(models, running.version if running else None)
    )
    if repaired:
        log.warning("champion pointer named %s but the registry names %s; repairing", pointer, record.version or "none")
        _follow(db, models)
    _report_missing(str(models), None if champion_there else f"{record.version} (pointer on {pointer})")
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
    ending: challenge.Ending,
    *,
    by: str,
    fence: LeaseFence | None = None,
) -> None:
    """End the challenge `seen` (only that one, and only if no champion switch happened since it was
    judged; with `fence`, only under that lease term): its challenger becomes the champion (artifacts
    checked first) or is rejected."""
    if ending.promote:
        models_dir.check_loadable(models, seen.version)
    challenge.end(db, seen, ending, by=by, fence=fence)
    _follow(db, models)
