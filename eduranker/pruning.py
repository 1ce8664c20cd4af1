"""Retention of the models volume: which version folders to delete, decided by a pure function, and
the pass that deletes them (`prune`: `eduranker prune`, and the producer's daily duty).

Kept, whatever their age: the champion, the previous champion (a holdback or interleaving comparison
serves it), the last RETAIN_CHAMPIONS of the champion chain (rollback walks back through it), the
newest RETAIN_VERSIONS versions, any version not yet decided (a candidate), and any version a running
job may still read (retired since the oldest active job took the slot). Pruned: rejected, retired and
rolled-back versions that stopped serving (`retired_at`; registration for a version that never served)
more than RETAIN_DAYS ago. The registry keeps every version's document, marked `artifacts: "pruned"`
before the folder goes, so a crash between the two is finished by the next pass. A document that cannot
be read as a version (a bad name, a wrong type) is skipped and counted; the pass goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    retired_at: datetime | None = None  # when it stopped serving (retired or rolled back)

    @property
    def stopped_at(self) -> datetime | None:
        """Where its age counts from: when it stopped serving, else when it was registered."""
        return self.retired_at or self.created_at


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
        and v.stopped_at is not None
        and v.stopped_at <= cutoff
    ]


def view_of(doc: dict[str, Any]) -> VersionView | str:
    """The decision's view of one registry document, or why it cannot be one (skipped and counted)."""
    version = doc.get("version")
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        return f"{version!r}: not a version name"
    times = {name: doc.get(name) for name in ("created_at", "retired_at")}
    bad = [name for name, value in times.items() if value is not None and not isinstance(value, datetime)]
    if bad:
        return f"{version}: {', '.join(bad)} is not a date"
    status = doc.get("status")
    return VersionView(version, status if isinstance(status, str) else "", times["created_at"],
                       doc.get("artifacts") == "pruned", times["retired_at"])  # fmt: skip


@dataclass
class PruneReport:
    pruned: list[str]
    finished: list[str]  # marked pruned by an earlier pass whose folder was still there
    kept: int
    dry_run: bool
    skipped: list[str] = field(default_factory=list)  # documents that are not readable versions, and why
    refused: list[str] = field(default_factory=list)  # chosen, but a promotion marked them meanwhile

    def as_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "finished": self.finished, "kept": self.kept, "dry_run": self.dry_run,
                "skipped": self.skipped, "refused": self.refused}  # fmt: skip


def _protected(db: Db, models_dir: str) -> store.Protected:
    protected = store.protected_versions(db)
    # What the volume's pointers name, whatever the registry says (the search API follows these).
    pointed = {champion_target(models_dir, POINTER), champion_target(models_dir, PREVIOUS)}
    protected.versions.update(v for v in pointed if v)
    return protected


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


def _views(db: Db) -> tuple[list[VersionView], list[str]]:
    views: list[VersionView] = []
    skipped: list[str] = []
    for doc in store.version_views(db):
        view = view_of(doc)
        (views.append(view) if isinstance(view, VersionView) else skipped.append(view))
    return views, skipped


def prune(db: Db, s: Settings, *, now: datetime, dry_run: bool = False, by: str = "retention") -> PruneReport:
    """Delete the folders `to_prune` names: each is marked pruned in the registry first (conditionally,
    on its status being still prunable and no promotion having marked it since the champion record was
    read), then removed. Also expires finished jobs (a TTL index). A pass (not a dry run) stores its
    report, which `eduranker status` shows."""
    protected = _protected(db, s.models_dir)
    views, skipped = _views(db)
    for why in skipped:
        log.warning("retention skipped a version document: %s", why)
    chosen = to_prune(views, protected.chain, protected.versions, RetentionRule.from_settings(s), now)
    leftovers = [v.version for v in views if v.pruned and version_dir(s.models_dir, v.version).exists()]
    report = PruneReport([], [], len(views) - len(chosen), dry_run, skipped)
    if dry_run:
        report.pruned, report.finished = chosen, leftovers
        return report
    store.ensure_job_expiry(db, s.job_retention_days)
    for version in chosen:
        if store.mark_pruned(db, version, by=by, record_seq=protected.seq):
            remove_folder(s.models_dir, version)
            report.pruned.append(version)
        else:
            report.refused.append(version)
    report.finished = [v for v in leftovers if v not in protected.versions and remove_folder(s.models_dir, v)]
    if report.pruned or report.finished:
        log.info("retention pruned %s (finished %s)", report.pruned, report.finished)
    store.save_pass(db, report.as_dict())
    return report
