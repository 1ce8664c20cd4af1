"""Version folders that pass the loadability check without training a model."""

import json
import struct
from pathlib import Path

from eduranker.pipeline.artifacts import staged_version_dir


def write_loadable_files(folder: Path) -> None:
    """What `check_loadable` reads: a config, a safetensors header with one tensor, a tokenizer file."""
    (folder / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (folder / "tokenizer.json").write_text("{}")


def make_version(models_dir: str | Path, version: str) -> None:
    with staged_version_dir(models_dir, version) as folder:
        write_loadable_files(folder)
        (folder / "training_report.txt").write_text(f"report of {version}\n")


def champion_link(settings) -> str:
    """The version the `champion` symlink points at."""
    return (Path(settings.models_dir) / "champion").resolve().name
