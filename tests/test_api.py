"""The reranking endpoints over real HTTP: `eduranker serve` (uvicorn) on loopback, serving the demo
job's version; info, a rerank, every bad input refused with a reason, and a champion swap under load."""

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pymongo
import pytest

from console import demo
from console.localservers import free_port
from eduranker.models_dir import point_champion, version_dir
from tests.celery_worker import PATIENCE, ROOT

DOCUMENTS = [f"{title}\n\nA lesson for secondary students." for title in (
    "Photosynthesis explained with diagrams", "Why Rome fell: five theories", "Inside the plant cell: organelles",
    "Balancing equations with the atom-count method", "How leaves turn sunlight into sugar")] * 4  # fmt: skip


@pytest.fixture(scope="module")
def resources_db(mongo_server_url):
    """The demo's resources in a database of the module's own: what `--resources-from-mongodb` reads."""
    name = f"api_{uuid.uuid4().hex[:12]}"
    with pymongo.MongoClient(mongo_server_url) as client:
        corpus = demo.insert_corpus(client[name], random.Random(0))
        yield name, corpus
        client.drop_database(name)


@pytest.fixture(scope="module")
def served(trained_demo, tiny_model_path, tmp_path_factory, mongo_server_url, resources_db):
    """A real `eduranker serve` over a copy of the demo job's models: v0001 the champion, and v0002 (the
    same weights, registered as another version) to swap to; resource ids read from MongoDB."""
    models = tmp_path_factory.mktemp("api") / "models"
    shutil.copytree(trained_demo.models_dir, models, symlinks=True)
    v2 = version_dir(models, "v0002")
    shutil.copytree(version_dir(models, "v0001"), v2)
    meta = json.loads((v2 / "training_metadata.json").read_text())
    (v2 / "training_metadata.json").write_text(json.dumps({**meta, "version": "v0002", "job_id": "job-2"}))
    point_champion(models, "v0001")
    port = free_port()
    env = {**os.environ, "MODELS_DIR": str(models), "BASE_MODEL_NAME": tiny_model_path, "MAX_LENGTH": "48",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    env.update(MONGODB_URL=mongo_server_url, MONGODB_DB=resources_db[0])
    argv = [sys.executable, "-m", "console.cli", "serve", "--port", str(port), "--poll-seconds", "0.2",
            "--threads", "2", "--max-documents", "30", "--resources-from-mongodb"]  # fmt: skip
    log = open(models.parent / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120 * PATIENCE
    with httpx.Client(base_url=base, timeout=60) as client:
        while True:
            assert proc.poll() is None, (models.parent / "serve.log").read_text()
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (models.parent / "serve.log").read_text()
            time.sleep(0.2)
    yield base, models
    proc.terminate()
    proc.wait(60)
    log.close()


@pytest.mark.integration
@pytest.mark.slow
def test_info_rerank_health_and_docs(served):
    base, _ = served
    with httpx.Client(base_url=base, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/readyz").json() == {"status": "ready", "version": "v0001"}
        info = client.get("/api/reranking/info-modele").json()
        assert info["version"] == "v0001" and info["job_id"] == "job-1" and info["challenge"] is None
        assert info["metrics"]["after"]["roc_auc"] > 0 and "roc_auc" in info["metrics"]["before"]
        assert info["gate"]["promote"] is True and info["gate_reason"]
        assert info["serving_since"] and info["variant"] and info["last_error"] is None
        response = client.post("/api/reranking/rerank", json={"query": "how do plants make food",
                                                               "documents": DOCUMENTS, "key": "user-1"})  # fmt: skip
        assert response.status_code == 200, response.text
        result = response.json()
        assert sorted(result["order"]) == list(range(20)) and len(result["scores"]) == 20
        assert result["version"] == "v0001" and result["holdback"] is False
        assert [p["rank"] for p in result["positions"]] == list(range(1, 21))
        assert [p["index"] for p in result["positions"]] == result["order"]
        assert {p["model_version"] for p in result["positions"]} == {"v0001"}
        assert all(p["score"] == result["scores"][p["index"]] for p in result["positions"])
        assert DOCUMENTS[result["order"][0]].startswith(("Photosynthesis", "How leaves", "Inside the plant"))
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/api/reranking/info-modele", "/api/reranking/rerank"} <= set(paths)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    "body,reason",
    [
        ({"query": "  ", "documents": ["a"]}, "the query is empty"),
        ({"query": "q", "documents": ["a"] * 31}, "31 documents: at most 30 per request"),
        ({"query": "q", "documents": ["a", "x" * 4001]}, "document 1 has 4001 characters: at most 4000"),
        ({"query": "q" * 4001, "documents": ["a"]}, "the query has 4001 characters: at most 4000"),
        ({"query": "q"}, "give either documents or resource_ids"),
        ({"query": "q", "documents": ["a"], "resource_ids": ["r1"]}, "give either documents or resource_ids"),
        (
            {"query": "q", "resource_ids": ["r1", "65f0c0ffee0000000000beef"]},
            "unknown resource ids: r1, 65f0c0ffee0000000000beef",
        ),
    ],
)
def test_bad_input_is_refused_with_its_reason(served, body, reason):
    base, _ = served
    response = httpx.post(f"{base}/api/reranking/rerank", json=body, timeout=60)
    assert response.status_code == 422 and response.json()["detail"] == reason, response.text


@pytest.mark.integration
@pytest.mark.slow
def test_malformed_requests_are_4xx_not_500(served):
    base, _ = served
    url = f"{base}/api/reranking/rerank"
    for content in (b"{not json", b"[]", b'{"documents": ["a"]}', b'{"query": 3, "documents": "a"}'):
        response = httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 422, (content, response.text)
    assert httpx.get(url, timeout=60).status_code == 405


@pytest.mark.integration
@pytest.mark.slow
def test_a_champion_swap_under_load_fails_no_request(served):
    base, models = served
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()

    def client_loop():
        with httpx.Client(base_url=base, timeout=120) as client:
            while not stop.is_set():
                try:
                    response = client.post("/api/reranking/rerank", json={"query": "what is photosynthesis",
                                                                          "documents": DOCUMENTS[:5]})  # fmt: skip
                    ok = response.status_code == 200
                    with lock:
                        (seen if ok else failures).append(response.json().get("version") if ok else response.text)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        for target in ("v0002", "v0001"):
            with lock:
                start = len(seen)
            point_champion(models, target)  # what a promotion or a rollback does to the pointer
            deadline, switched = time.monotonic() + 60 * PATIENCE, False
            while not switched and time.monotonic() < deadline:
                time.sleep(0.1)
                with lock:  # requests begun before the swap may still end on the old version: wait past them
                    switched = target in seen[start:] and seen[-1] == target
            assert switched, seen[start:]
            info = httpx.get(f"{base}/api/reranking/info-modele", timeout=60).json()
            assert info["version"] == target
            assert info["job_id"] == ("job-2" if target == "v0002" else "job-1")
    finally:
        stop.set()
        for thread in clients:
            thread.join(120)
    assert failures == []
    assert {"v0001", "v0002"} <= set(seen) and len(seen) > 8


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_snippet_runs_after_the_demo(trained_demo, tmp_path):
    """README's "Using it" Python, pasted in a checkout where `scripts/demo` has run (its champion is
    under `.local/models`) without the cluster's environment sourced."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using it") :]
    snippet = section[section.index("```python\n") + 10 : section.index("```", section.index("```python\n") + 10)]
    shutil.copytree(trained_demo.models_dir, tmp_path / ".local" / "models", symlinks=True)
    point_champion(tmp_path / ".local" / "models", "v0001")
    env = {k: v for k, v in os.environ.items() if k != "MODELS_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("v0001 [0, 1]"), done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_resource_ids_are_reranked_on_the_texts_training_reads(served, resources_db):
    base, _ = served
    _, corpus = resources_db
    titles = ["Why Rome fell: five theories", "Photosynthesis explained with diagrams", "Reading the periodic table"]
    ids = [str(corpus.resource_ids[t]) for t in titles]
    by_id = httpx.post(f"{base}/api/reranking/rerank", json={"query": "how do plants make food", "resource_ids": ids},
                       timeout=60).json()  # fmt: skip
    # The document's text as the snapshot builds it: the title, a blank line, the description.
    texts = [f"{t}\n\nA {corpus.subject_of_resource[t]} lesson for secondary students. {t}." for t in titles]
    by_text = httpx.post(f"{base}/api/reranking/rerank", json={"query": "how do plants make food", "documents": texts},
                         timeout=60).json()  # fmt: skip
    assert by_id["order"] == by_text["order"] and by_id["scores"] == pytest.approx(by_text["scores"])
    assert [p["resource_id"] for p in by_id["positions"]] == [ids[i] for i in by_id["order"]]
    assert by_id["positions"][0]["resource_id"] == ids[1]
