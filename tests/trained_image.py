"""A trained demo job, built once per session and copied into each test's own database and models folder.

Training on the demo feedback is the slowest thing the suite does. Tests that read what a first job left
behind, or build on it, start from a copy: each still owns its database and folder, so no test sees
another's writes, and the job itself is the real one (real server, real model, real artifacts).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from console import demo
from eduranker.settings import Settings
from eduranker.store import jobs

# Index options that change behaviour; the rest of index_information() is bookkeeping.
_INDEX_OPTIONS = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression")


@dataclass(frozen=True)
class TrainedImage:
    db_name: str
    models_dir: Path
    outcome: dict[str, Any]
    stages: list[tuple[str, dict[str, Any]]]


def build(settings: Settings, root: Path, *, seed: int, job_id: str) -> TrainedImage:
    """Seeds the demo feedback in a database of its own and runs one job there, as a test would."""
    from worker.job import run_training_job

    image = replace(settings, mongodb_db=f"image_{uuid.uuid4().hex[:12]}", models_dir=str(root / "models"))
    with MongoClient(image.mongodb_url, tz_aware=True) as client:
        db = client[image.mongodb_db]
        demo.seed_feedback(db, seed=seed)
        jobs.create_job(db, job_id, trigger={"reason": "test"})
    stages: list[tuple[str, dict[str, Any]]] = []
    outcome = run_training_job(image, job_id, on_progress=lambda p: stages.append((p["stage"], dict(p))))
    return TrainedImage(image.mongodb_db, Path(image.models_dir), outcome, stages)


def restore(image: TrainedImage, db: Database[Any], models_dir: str) -> None:
    """Copies the image's documents, indexes and version folders (symlinks kept relative) into a test's own."""
    source = db.client[image.db_name]
    for name in source.list_collection_names():
        for index, info in source[name].index_information().items():
            if index != "_id_":
                options = {k: info[k] for k in _INDEX_OPTIONS if k in info}
                db[name].create_index(list(info["key"]), name=index, **options)
        docs = list(source[name].find())
        if docs:
            db[name].insert_many(docs)
    shutil.copytree(image.models_dir, models_dir, symlinks=True, dirs_exist_ok=True)
