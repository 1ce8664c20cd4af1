"""Retention over thirty real jobs: each trains, is judged and registered; a prune pass follows each one,
and a search-side reranker follows the champion throughout."""

from datetime import timedelta
from pathlib import Path

import pytest

JOBS = 30


@pytest.fixture(scope="module")
def one_layer_model(tiny_model_path, tmp_path_factory) -> str:
    """The offline MiniLM cut to its first layer: these jobs test what is kept on disk, not what is learnt,
    and a sixth of the arithmetic lets thirty of them run in a test."""
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path_factory.mktemp("one_layer")
    AutoModel.from_pretrained(tiny_model_path, num_hidden_layers=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(folder)
    return str(folder)


def _folders(models_dir: str) -> set[str]:
    return {p.name for p in (Path(models_dir) / "versions").iterdir()}


@pytest.mark.integration
@pytest.mark.slow
def test_thirty_trained_jobs_with_retention_keep_the_newest_five_the_chain_and_every_registration(
    db, settings, one_layer_model
):
    from console import demo
    from eduranker import champion
    from eduranker.models_dir import check_loadable
    from eduranker.pruning import prune
    from eduranker.serving import ChampionReranker
    from eduranker.store import ensure_indexes, jobs, versions
    from eduranker.store.clock import server_now
    from worker.job import run_training_job

    # Small jobs: the newest 100 pairs trained and judged (the caps' smallest values), 200 resamples.
    s = settings.with_overrides(retain_versions=5, retain_champions=2, retain_days=0.0, gate_bootstrap_samples=200,
                                train_max_pairs=100, gate_max_pairs=100, base_model_name=one_layer_model)  # fmt: skip
    ensure_indexes(db)
    demo.seed_feedback(db, seed=1)
    reranker = ChampionReranker(s.models_dir, base_model=s.base_model_name, poll_seconds=3600, max_length=48)
    query, documents = "how do plants make food", ["Photosynthesis for beginners", "The Roman Empire"]
    promoted_by_gate, registered, pruned, champions = 0, [], set(), []
    try:
        for i in range(1, JOBS + 1):
            # A different seed each time: a new candidate for the gate to judge against the champion.
            jobs.create_job(db, f"job-{i}", trigger={"reason": "test"}, overrides={"seed": i})
            outcome = run_training_job(s, f"job-{i}", db=db)
            assert outcome["status"] in ("succeeded", "rejected") and outcome["version"], outcome
            version = outcome["version"]
            registered.append(version)
            promoted_by_gate += bool(outcome["promoted"])
            if not outcome["promoted"] and i % 4 == 1:  # an operator promotes now and then, over the gate
                champion.promote(db, s.models_dir, version, by="test", reason="by hand", force=True)
            if outcome["promoted"] or i % 4 == 1:
                champions.append(version)
            report = prune(db, s, now=server_now(db) + timedelta(seconds=1))
            pruned.update(report.pruned)

            record = versions.read_champion(db)
            check_loadable(s.models_dir, record.version)  # after every pass: the champion and previous load
            if record.previous:
                check_loadable(s.models_dir, record.previous)
            reranker.refresh()
            assert reranker.version == record.version and reranker.last_error is None
            assert reranker.rerank(query, documents).version == record.version
            assert [d["version"] for d in versions.list_versions(db)] == registered  # the registry keeps all
    finally:
        reranker.close()

    record = versions.read_champion(db)
    kept = _folders(s.models_dir)
    assert record.chain == champions  # every promotion, by the gate or by hand, in order
    assert kept == set(registered[-5:]) | set(record.chain[-2:])
    assert pruned == set(registered) - kept and len(kept) <= 5 + 2 + 1
    docs = {d["version"]: d for d in versions.list_versions(db)}
    assert {v for v, d in docs.items() if d.get("artifacts") == "pruned"} == pruned
    # Pruning removes folders, not facts: every version keeps its metrics, gate and history.
    assert all(d["metrics"]["after"] and "gate" in d and d["history"] for d in docs.values())
    print(f"{promoted_by_gate} of {JOBS} promoted by the gate; chain {record.chain}; kept {sorted(kept)}")
