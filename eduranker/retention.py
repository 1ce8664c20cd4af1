"""Retention of the models volume: which version folders to delete, decided by a pure function, and
the pass that deletes them (`prune`: `eduranker prune`, and the producer's daily duty).

Kept, whatever their age: the champion, the previous champion (a holdback or interleaving comparison
serves it), the last RETAIN_CHAMPIONS of the champion chain (rollback walks back through it), the
newest RETAIN_VERSIONS versions, any version not yet decided (a candidate), and any version a running
job may still read (retired since the oldest active job was created). Pruned: rejected, retired and
rolled-back versions older than RETAIN_DAYS. The registry keeps every version's document, marked
`artifacts: "pruned"` before the folder goes, so a crash between the two is finished by the next pass.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from eduranker.models_dir import POINTER, PREVIOUS, VERSION_PATTERN, champion_target, version_dir
from eduranker.settings import Settings
from eduranker.store import retention as store
from eduranker.store.types import Db

log = logging.getLogger(__name__)

PRUNABLE_STATUSES = frozenset(store.PRUNABLE_STATUSES)
TRASH = ".trash"  # a folder is renamed here first, so it disappears from versions/ in one step


@dataclass(frozen=True)
class RetentionRule:
    keep_champions: int
    keep_newest: int
    min_age: timedelta

    @classmethod
    def from_settings(cls, s: Settings) -> RetentionRule:
        return cls(s.retain_champions, s.retain_versions, timedelta(days=s.retain_days))


@dataclass(frozen=True)
class VersionView:
    """What the decision needs of one registry document."""

    version: str
    status: str
    created_at: datetime | None
    pruned: bool


def version_number(version: str) -> int:
    return int(version[1:]) if VERSION_PATTERN.fullmatch(version) else -1


def to_prune(
    views: Iterable[VersionView], chain: list[str], protected: set[str], rule: RetentionRule, now: datetime
) -> list[str]:
    """The versions whose folders go now, oldest first. `protected`: the champion, the previous champion
    and whatever a running job or an online comparison may use."""
    ordered = sorted(views, key=lambda v: version_number(v.version))
    keep = set(protected) | set(chain[-rule.keep_champions :])
    keep |= {v.version for v in ordered[-rule.keep_newest :]} if rule.keep_newest else set()
    cutoff = now - rule.min_age
    return [
        v.version
        for v in ordered
        if not v.pruned
        and v.version not in keep
        and v.status in PRUNABLE_STATUSES
        and v.created_at is not None
        and v.created_at <= cutoff
    ]


@dataclass
class PruneReport:
    pruned: list[str]
    finished: list[str]  # marked pruned by an earlier pass whose folder was still there
    kept: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "finished": self.finished, "kept": self.kept, "dry_run": self.dry_run}


def _protected(db: Db, models_dir: str) -> tuple[list[str], set[str]]:
    record, protected = store.protected_versions(db)
    # What the volume's pointers name, whatever the registry says (the search API follows these).
    protected |= {v for v in (champion_target(models_dir, POINTER), champion_target(models_dir, PREVIOUS)) if v}
    return record, protected


def remove_folder(models_dir: str, version: str) -> bool:
    """Rename the version's folder out of versions/ in one step, then delete it; False if it was gone."""
    folder = version_dir(models_dir, version)
    if not folder.exists():
        return False
    trash = Path(models_dir) / TRASH
    trash.mkdir(exist_ok=True)
    target = trash / f"{version}-{uuid.uuid4().hex[:8]}"
    os.replace(folder, target)
    shutil.rmtree(target, ignore_errors=True)
    return True


def prune(db: Db, s: Settings, *, now: datetime, dry_run: bool = False, by: str = "retention") -> PruneReport:
    """Delete the folders `to_prune` names: each is marked pruned in the registry first (conditionally,
    on its status being still prunable), then removed. Also expires finished jobs (a TTL index)."""
    chain, protected = _protected(db, s.models_dir)
    views = [VersionView(d["version"], d.get("status", ""), d.get("created_at"), d.get("artifacts") == "pruned")
             for d in store.version_views(db)]  # fmt: skip
    chosen = to_prune(views, chain, protected, RetentionRule.from_settings(s), now)
    leftovers = [v.version for v in views if v.pruned and version_dir(s.models_dir, v.version).exists()]
    report = PruneReport([], [], len(views) - len(chosen), dry_run)
    if dry_run:
        report.pruned, report.finished = chosen, leftovers
        return report
    store.ensure_job_expiry(db, s.job_retention_days)
    for version in chosen:
        if store.mark_pruned(db, version, by=by):
            remove_folder(s.models_dir, version)
            report.pruned.append(version)
    report.finished = [v for v in leftovers if v not in protected and remove_folder(s.models_dir, v)]
    if report.pruned or report.finished:
        log.info("retention pruned %s (finished %s)", report.pruned, report.finished)
    return report
