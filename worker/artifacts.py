"""The models volume: one folder per version written aside and renamed in, and the champion pointer.

Layout under MODELS_DIR:
    versions/<version>/      complete artifacts (appear only once whole)
    .staging/<version>-<id>/ work in progress (removed on failure)
    champion -> versions/<version>   symlink switched atomically
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from eduranker.errors import UnknownVersion

VERSION_PATTERN = re.compile(r"^v\d{4,}$")


def checked_version(version: str) -> str:
    """A version name that cannot escape MODELS_DIR (no separators, no dots, no absolute paths)."""
    if not VERSION_PATTERN.fullmatch(version):
        raise UnknownVersion(f"not a version name: {version!r} (expected like 'v0003')")
    return version


def version_dir(models_dir: str | Path, version: str) -> Path:
    return Path(models_dir) / "versions" / checked_version(version)


def relative_artifact_path(version: str) -> str:
    return f"versions/{checked_version(version)}"


# A staging folder this old belonged to a worker killed while writing (no job runs for a day).
ABANDONED_AFTER_S = 24 * 3600


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
def staged_version_dir(models_dir: str | Path, version: str) -> Iterator[Path]:
    """Yield an empty staging folder; on clean exit it is renamed to versions/<version>, else removed."""
    root = Path(models_dir)
    final = version_dir(root, version)
    remove_abandoned_staging(root)
    staging = root / ".staging" / f"{version}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        yield staging
        final.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staging)
        # rename(2) is atomic within one filesystem; staging sits under the same root for that reason.
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


HELDOUT_PAIRS = "heldout_pairs.jsonl"


def write_heldout_pairs(folder: Path, pairs) -> None:
    """The pairs this version was judged on, labels frozen: the next candidate must not regress on them."""
    with open(folder / HELDOUT_PAIRS, "w", encoding="utf-8") as out:
        for p in pairs:
            out.write(json.dumps({"query": p.query, "document": p.document, "label": p.label}) + "\n")


def read_heldout_pairs(folder: str | Path) -> list:
    """Pairs saved by `write_heldout_pairs`; none for a folder without them (an older version)."""
    from worker.pairs import Pair

    path = Path(folder) / HELDOUT_PAIRS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Pair("", "", "", r["query"], r["document"], float(r["label"]), None) for r in rows]


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def point_champion(models_dir: str | Path, version: str) -> Path:
    """Switch MODELS_DIR/champion to versions/<version> in one rename, never leaving it missing."""
    root = Path(models_dir)
    target = version_dir(root, version)
    if not target.is_dir():
        raise UnknownVersion(f"no artifacts for {version} under {root}")
    link = root / "champion"
    temp = root / f".champion-{uuid.uuid4().hex[:8]}"
    os.symlink(Path("versions") / version, temp)
    os.replace(temp, link)
    return link


def champion_target(models_dir: str | Path) -> str | None:
    link = Path(models_dir) / "champion"
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name
