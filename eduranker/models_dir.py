"""The models volume's layout and its champion pointer. Plain files only: no torch, no database.

MODELS_DIR/versions/<version>/      complete artifacts (appear only once whole)
MODELS_DIR/.staging/<version>-<id>/ work in progress
MODELS_DIR/champion -> versions/<version>   what the search API loads
MODELS_DIR/previous, MODELS_DIR/challenger  the holdback's version; a running challenge's challenger
"""

from __future__ import annotations

import json
import os
import re
import struct
import uuid
from pathlib import Path

from eduranker.errors import UnknownVersion, VersionUnusable

# `v0003`; another index than the default prefixes its name: `fr-v0003` (eduranker/indexes.py).
VERSION_PATTERN = re.compile(r"^([a-z][a-z0-9_]{0,31}-)?v\d{4,}$")
POINTER = "champion"
PREVIOUS = "previous"  # the champion before it: what a holdback share of requests is served by
CHALLENGER = "challenger"  # the running challenge's version: served interleaved with the champion
# What a folder must hold for `CrossEncoder(path)` to load it.
REQUIRED_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def checked_version(version: str) -> str:
    """A version name that cannot escape MODELS_DIR (no separators, no dots, no absolute paths)."""
    if not VERSION_PATTERN.fullmatch(version):
        raise UnknownVersion(f"not a version name: {version!r} (expected like 'v0003')")
    return version


def version_dir(models_dir: str | Path, version: str) -> Path:
    return Path(models_dir) / "versions" / checked_version(version)


def relative_artifact_path(version: str) -> str:
    return f"versions/{checked_version(version)}"


def check_loadable(models_dir: str | Path, version: str) -> Path:
    """Refuse a version whose folder would not load, before anything points at it.

    Reads what loading reads first (config, the safetensors header, a tokenizer file) without torch,
    so the CLI and the producer can check as cheaply as the worker.
    """
    folder = version_dir(models_dir, version)
    if not folder.is_dir():
        raise VersionUnusable(f"{version}: no artifacts at {folder}")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise VersionUnusable(f"{version}: {name} is missing from {folder}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise VersionUnusable(f"{version}: no tokenizer files in {folder}")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        with open(folder / "model.safetensors", "rb") as weights:
            (header_size,) = struct.unpack("<Q", weights.read(8))
            if not 0 < header_size < 100_000_000:
                raise ValueError(f"implausible header size {header_size}")
            header = json.loads(weights.read(header_size))
        if not any(key != "__metadata__" for key in header):
            raise ValueError("no tensors")
    except (OSError, ValueError, struct.error) as exc:
        raise VersionUnusable(f"{version}: artifacts in {folder} do not load: {exc}") from exc
    return folder


def point_champion(models_dir: str | Path, version: str, name: str = POINTER) -> Path:
    """Switch MODELS_DIR/<name> to versions/<version> in one rename, never leaving it missing."""
    root = Path(models_dir)
    if not version_dir(root, version).is_dir():
        raise UnknownVersion(f"no artifacts for {version} under {root}")
    link = root / name
    temp = root / f".{name}-{uuid.uuid4().hex[:8]}"
    os.symlink(Path("versions") / version, temp)
    os.replace(temp, link)
    return link


def remove_pointer(models_dir: str | Path, name: str = POINTER) -> bool:
    """Remove MODELS_DIR/<name> (the registry names no such version: the base model serves)."""
    link = Path(models_dir) / name
    if link.is_symlink():
        link.unlink()
        return True
    return False


def champion_target(models_dir: str | Path, name: str = POINTER) -> str | None:
    """The version MODELS_DIR/<name> points at, or None without a pointer."""
    link = Path(models_dir) / name
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name
