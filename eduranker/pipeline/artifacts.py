"""Writing a version folder: aside in staging, fsynced, renamed in whole; and its frozen held-out pairs.

The layout and the champion pointer are in `eduranker.models_dir`; this module writes versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from eduranker.models_dir import checked_version, relative_artifact_path, version_dir
from eduranker.pipeline.pairs import Pair

log = logging.getLogger(__name__)

__all__ = ["checked_version", "relative_artifact_path", "version_dir", "staged_version_dir"]

# A staging folder this old belonged to a worker killed while writing (no job runs for a day).
ABANDONED_AFTER_S = 24 * 3600
# Frozen held-out pairs keep no feedback time; they are scored, never windowed.
NO_TIME = datetime.fromtimestamp(0, UTC)


def remove_abandoned_staging(models_dir: str | Path, now: float | None = None) -> list[str]:
    """Delete staging folders left by workers killed mid-write; returns their names."""
    staging_root = Path(models_dir) / ".staging"
    now = time.time() if now is None else now
    removed = []
    for folder in staging_root.iterdir() if staging_root.is_dir() else ():
        if now - folder.stat().st_mtime > ABANDONED_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


@contextlib.contextmanager
def staged_version_dir(models_dir: str | Path, version: str, private_gid: int = -1) -> Iterator[Path]:
    """Yield an empty staging folder; on clean exit it is renamed to versions/<version>, else removed.
    `private_gid`: the group that may read the held-out texts (-1: the models folder's group)."""
    root = Path(models_dir)
    final = version_dir(root, version)
    remove_abandoned_staging(root)
    staging = root / ".staging" / f"{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        yield staging
        final.parent.mkdir(parents=True, exist_ok=True)
        _publish_modes(staging)
        _restrict_heldout(staging / HELDOUT_PAIRS, private_gid if private_gid >= 0 else root.stat().st_gid)
        _fsync_tree(staging)
        # rename(2) is atomic within one filesystem; staging sits under the same root for that reason.
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


HELDOUT_PAIRS = "heldout_pairs.jsonl"
HELDOUT_MODE = 0o640  # the owner and the trainer's group; never the search API or others


def write_heldout_pairs(folder: Path, pairs: Iterable[Pair]) -> None:
    """The pairs this version was judged on, labels frozen: the next candidate must not regress on them.
    Users' queries: the file is created 0640 (never more under any umask) before its first byte."""
    fd = os.open(folder / HELDOUT_PAIRS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, HELDOUT_MODE)
    os.fchmod(fd, HELDOUT_MODE)  # the umask may have taken bits away; the group must still read it
    with open(fd, "w", encoding="utf-8") as out:
        for p in pairs:
            out.write(json.dumps({"query": p.query, "document": p.document, "label": p.label}) + "\n")


def read_heldout_pairs(folder: str | Path) -> list[Pair]:
    """Pairs saved by `write_heldout_pairs`; none for a folder without them (an older version)."""
    path = Path(folder) / HELDOUT_PAIRS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Pair("", "", "", r["query"], r["document"], float(r["label"]), NO_TIME) for r in rows]


def _publish_modes(path: Path) -> None:
    """Files 0644 and folders 0755 under the operator's umask: a search API running as another user must
    read the champion (some writers, safetensors among them, create 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for item in path.rglob("*"):
        if item.name != HELDOUT_PAIRS:  # kept 0640 throughout (`write_heldout_pairs`)
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def _restrict_heldout(path: Path, gid: int) -> None:
    """Users' queries: readable by the owner and the trainer's group only (0640); the search API needs
    only the model files. A group the process may not give the file keeps the file's own group."""
    if not path.exists():
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        log.warning("cannot give %s to group %d; it keeps group %d", path.name, gid, path.stat().st_gid)
    path.chmod(HELDOUT_MODE)


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
