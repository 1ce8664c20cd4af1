"""The search API's reranker following real model folders while requests never stop."""

import gc
import subprocess
import sys
import threading
import time
import weakref

import pytest
import torch

from eduranker import champion
from eduranker.models_dir import point_champion, version_dir
from eduranker.pipeline.model_io import load_cross_encoder, save_cross_encoder
from eduranker.serving import ChampionReranker
from eduranker.serving.reranker import resident_memory_bytes
from eduranker.store import ensure_indexes, versions
from tests.celery_worker import ROOT

DOCS = ["Photosynthesis explained with diagrams", "Steam engines and factories", "The quadratic formula"]


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory, tiny_model_path):
    """Four real versions of the offline MiniLM, each with a differently initialised ranking head."""
    root = tmp_path_factory.mktemp("models")
    for seed in range(1, 5):
        model, tokenizer = load_cross_encoder(tiny_model_path, torch.device("cpu"), seed)
        folder = version_dir(root, f"v{seed:04d}")
        folder.mkdir(parents=True)
        save_cross_encoder(model, tokenizer, folder, 48)
    return root


@pytest.fixture()
def models(model_folders, tmp_path):
    """A models volume of its own per test (symlinked version folders, so nothing is copied)."""
    (tmp_path / "versions").mkdir()
    for folder in (model_folders / "versions").iterdir():
        (tmp_path / "versions" / folder.name).symlink_to(folder, target_is_directory=True)
    return tmp_path


def test_importing_serving_loads_no_celery_and_no_database_client():
    code = "import sys, eduranker.serving; print(sorted(m for m in ('celery', 'pymongo', 'kombu') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
@pytest.mark.slow
def test_requests_never_fail_and_each_result_names_a_version_serving_at_that_moment(db, models):
    ensure_indexes(db)
    for v in ("v0001", "v0002", "v0003", "v0004"):
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}"})
    champion.promote(db, models, "v0001", by="test", reason="start")
    ranker = ChampionReranker(models, poll_seconds=0.2, max_length=48)
    served, errors, stop = [], [], threading.Event()

    def scorer():
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = ranker.rerank("how do plants make food", DOCS)
            except Exception as exc:  # noqa: BLE001 - counted below
                errors.append(exc)
                continue
            served.append((started, time.monotonic(), result.version))
            assert len(result.scores) == 3 and sorted(result.order) == [0, 1, 2]

    thread = threading.Thread(target=scorer)
    thread.start()
    switches = [(time.monotonic(), "v0001")]
    try:
        for action in ("v0002", "v0003", "v0004", "rollback"):
            time.sleep(1.5)
            if action == "rollback":
                _, restored = champion.rollback(db, models, by="test", reason="test")
                switches.append((time.monotonic(), restored))
            else:
                champion.promote(db, models, action, by="test", reason="test")
                switches.append((time.monotonic(), action))
            seen_by = time.monotonic() + 10
            while ranker.version != switches[-1][1] and time.monotonic() < seen_by:
                time.sleep(0.02)
            switches[-1] = (*switches[-1], time.monotonic() - switches[-1][0])
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
        ranker.close()
    assert errors == [] and len(served) > 20
    assert [s[1] for s in switches] == ["v0001", "v0002", "v0003", "v0004", "v0003"]
    lags = [s[2] for s in switches[1:]]
    assert max(lags) < 0.2 + 5.0, lags  # poll_seconds + load time (a MiniLM loads in well under 5 s)
    # A result's version was the pointer's champion at some moment in [start − lag, end].
    bounds = [(at, switches[i + 1][0] + switches[i + 1][2] if i + 1 < len(switches) else float("inf"), v)
              for i, (at, v, *_) in enumerate(switches)]  # fmt: skip
    for start, end, version in served:
        assert any(v == version and at <= end and start <= until for at, until, v in bounds), (start, version)


def test_a_corrupt_version_is_not_swapped_in_and_the_reason_is_kept(models):
    point_champion(models, "v0001")
    ranker = ChampionReranker(models, poll_seconds=3600, max_length=48)
    try:
        (models / "versions" / "v0002").unlink()  # this test's own copy: a real folder with broken weights
        broken = models / "versions" / "v0002"
        broken.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            source = version_dir(models, "v0001") / name
            if source.exists():
                (broken / name).write_bytes(source.read_bytes())
        (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
        point_champion(models, "v0002")
        assert ranker.refresh() is False
        assert ranker.version == "v0001" and "v0002" in ranker.last_error
        assert ranker.rerank("q", DOCS).version == "v0001"
        assert ranker.refresh() is False  # not retried until the pointer changes again
        point_champion(models, "v0003")
        assert ranker.refresh() is True and ranker.version == "v0003" and ranker.last_error is None
    finally:
        ranker.close()


@pytest.mark.slow
def test_resident_memory_stays_flat_over_20_swaps(models):
    point_champion(models, "v0001")
    ranker = ChampionReranker(models, poll_seconds=3600, max_length=48)
    rss = []
    try:
        for i in range(20):
            point_champion(models, "v0002" if i % 2 == 0 else "v0001")
            assert ranker.refresh()
            ranker.rerank("how do plants make food", DOCS)
            rss.append(resident_memory_bytes())
    finally:
        ranker.close()
    growth = rss[-1] - rss[4]
    assert growth < 60 * 2**20, [r // 2**20 for r in rss]  # one MiniLM is ~90 MB: no model is kept per swap


def test_a_swap_frees_the_old_model_without_the_cycle_collector(models):
    """The swap does not run gc.collect() (a full collection stalls every request thread): reference
    counting alone must let go of the model it replaced."""
    point_champion(models, "v0001")
    ranker = ChampionReranker(models, poll_seconds=3600, max_length=48)
    gc.collect()
    gc.disable()
    try:
        replaced = weakref.ref(ranker._serving.champion.model)
        point_champion(models, "v0002")
        assert ranker.refresh() and ranker.version == "v0002"
        assert replaced() is None
    finally:
        gc.enable()
        ranker.close()


@pytest.mark.integration
@pytest.mark.slow
def test_holdback_serves_a_stable_share_of_keys_with_the_previous_champion(db, models):
    ensure_indexes(db)
    for v in ("v0001", "v0002"):
        versions.insert_version(db, {"version": v, "job_id": f"job-{v}"})
    champion.promote(db, models, "v0001", by="test", reason="test")
    champion.promote(db, models, "v0002", by="test", reason="test")
    ranker = ChampionReranker(models, poll_seconds=3600, holdback=0.2, max_length=48)
    try:
        results = {f"user-{i}": ranker.rerank("q", DOCS[:1], key=f"user-{i}") for i in range(60)}
        again = {k: ranker.rerank("q", DOCS[:1], key=k).version for k in results}
        anonymous = [ranker.rerank("q", DOCS[:1]) for _ in range(200)]
    finally:
        ranker.close()
    held = [k for k, r in results.items() if r.holdback]
    assert all(results[k].version == "v0001" for k in held)
    assert all(r.version == "v0002" for k, r in results.items() if not r.holdback)
    # The share itself is the hash rule's (test_holdback_buckets_...); here: it is applied, per key.
    assert held and len(held) < len(results) / 2
    assert again == {k: r.version for k, r in results.items()}  # stable per key
    # A request without a key is drawn at random with the same share, so anonymous traffic lands on both
    # sides alike (it never only on the champion's, which would bias the comparison).
    anonymous_held = [r for r in anonymous if r.holdback]
    assert 15 <= len(anonymous_held) <= 65  # about 20% of 200 (binomial: outside w.p. < 1e-4)
    assert all(r.version == "v0001" for r in anonymous_held)


MANY_DOCS = [
    "Photosynthesis explained with diagrams", "Steam engines and factories", "The quadratic formula",
    "Plant cells and chloroplasts", "The French revolution", "Fractions for beginners", "How leaves use light",
]  # fmt: skip


@pytest.mark.slow
def test_interleaving_lists_each_document_once_in_both_orders_tagged_with_its_version(models):
    point_champion(models, "v0002")
    point_champion(models, "v0001", "previous")
    ranker = ChampionReranker(models, poll_seconds=3600, compare="interleave", share=1.0, seed=3, max_length=48)
    champion_alone = ChampionReranker(models, poll_seconds=3600, max_length=48)
    try:
        point_champion(models, "v0001")
        previous_alone = ChampionReranker(models, poll_seconds=3600, max_length=48)
        try:
            mine = champion_alone.rerank("how do plants make food", MANY_DOCS).order
            theirs = previous_alone.rerank("how do plants make food", MANY_DOCS).order
        finally:
            previous_alone.close()
        assert mine != theirs  # differently initialised heads: two different rankings to interleave
        tagged = set()
        for _ in range(20):
            result = ranker.rerank("how do plants make food", MANY_DOCS)
            assert result.interleaved and result.version == "v0002"
            assert sorted(result.order) == list(range(len(MANY_DOCS)))  # each document once
            assert len(result.versions) == len(result.order) and set(result.versions) == {"v0001", "v0002"}
            for version, ranking in (("v0002", mine), ("v0001", theirs)):
                contributed = [d for d, v in zip(result.order, result.versions, strict=True) if v == version]
                assert contributed == sorted(contributed, key=ranking.index)  # that version's order kept
            tagged.add(result.versions[0])
        assert tagged == {"v0001", "v0002"}  # either version may lead a list
        one = ranker.rerank("q", MANY_DOCS[:1])
        assert not one.interleaved and one.versions == ["v0002"]  # nothing to interleave
    finally:
        ranker.close()
        champion_alone.close()


@pytest.mark.slow
def test_interleaving_a_share_of_requests_and_the_holdback_salted_per_champion(models):
    point_champion(models, "v0002")
    point_champion(models, "v0001", "previous")
    ranker = ChampionReranker(models, poll_seconds=3600, compare="interleave", share=0.3, seed=1, max_length=48)
    try:
        results = [ranker.rerank("q", DOCS) for _ in range(60)]
    finally:
        ranker.close()
    interleaved = [r for r in results if r.interleaved]
    assert 6 <= len(interleaved) <= 36  # about 30% of 60 (binomial: outside this w.p. < 1e-4)
    assert all(r.versions == ["v0002"] * 3 and r.version == "v0002" for r in results if not r.interleaved)
    held_by = {}
    for champion_version, previous_version in (("v0002", "v0001"), ("v0003", "v0002")):
        point_champion(models, champion_version)
        point_champion(models, previous_version, "previous")
        ranker = ChampionReranker(models, poll_seconds=3600, holdback=0.2, max_length=48)
        try:
            held_by[champion_version] = {
                f"user-{i}" for i in range(60) if ranker.rerank("q", DOCS[:1], key=f"user-{i}").holdback
            }
        finally:
            ranker.close()
    first, second = held_by["v0002"], held_by["v0003"]
    assert first and second and first != second  # a new group judges each champion (shares: below)


def test_holdback_buckets_are_a_stable_uniform_share_salted_per_champion():
    """The routing rule alone, without models: 20,000 keys, two champions' salts."""
    from eduranker.serving.reranker import _bucket

    keys = [f"user-{i}" for i in range(20_000)]
    held = {salt: {k for k in keys if _bucket(f"{salt}\x00{k}") < 0.2} for salt in ("v0002", "v0003")}
    for group in held.values():
        assert abs(len(group) / len(keys) - 0.2) < 0.015  # binomial sd 0.0028: 5 sd
    assert held["v0002"] == {k for k in keys if _bucket(f"v0002\x00{k}") < 0.2}  # stable
    overlap = len(held["v0002"] & held["v0003"]) / len(keys)
    assert abs(overlap - 0.04) < 0.01  # independent groups: 0.2 × 0.2


def test_the_comparison_arguments_are_checked(models):
    point_champion(models, "v0001")
    for kwargs in ({"compare": "shuffle", "share": 0.5}, {"compare": "interleave", "share": 1.5},
                   {"holdback": 0.1, "compare": "interleave"}, {"holdback": 1.0}):  # fmt: skip
        with pytest.raises(ValueError):
            ChampionReranker(models, poll_seconds=3600, max_length=48, **kwargs)
