"""Every architecture family of the base-model defaults (docs/languages.md): BERT, XLM-RoBERTa,
CamemBERT, DeBERTa-v2, each as a tiny model built offline (tests/tiny_families.py), through the same
checks: the encoder's ids are the tokenizer's own pair encoding, and a job trains, judges and registers
a version that ChampionReranker serves in fp32 and bf16 as it was trained."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from eduranker.pipeline.encoding import collate, encode_pairs
from tests.tiny_families import FAMILIES, FRENCH, build

WORDS = [
    "la",
    "photosynthèse",
    "l’eau",
    "cœur",
    "élève",
    "révolution",
    "fractions",
    "the",
    "plants",
    "light",
    "sugar",
    "vaccine",
    "œuvre",
    "côte",
]


@pytest.fixture(scope="session")
def family_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request, family_root) -> tuple[str, Path]:
    """(family, folder): built once per test session."""
    return request.param, build(request.param, family_root / request.param)


def _texts(rng: random.Random, n: int, longest: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, longest))) for _ in range(n)]


@pytest.mark.parametrize("max_length", [12, 24, 64])
def test_the_encoders_ids_are_the_tokenizers_own_pair_encoding(family_model, max_length):
    from transformers import AutoTokenizer

    family, folder = family_model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rng = random.Random(max_length)
    queries, documents = _texts(rng, 40, 8) + FRENCH[:4], _texts(rng, 40, 40) + FRENCH[4:]
    encoded = encode_pairs(tokenizer, queries, documents, max_length, query_tokens=None)
    reference = tokenizer(queries, documents, truncation="longest_first", max_length=max_length, padding=True)
    batch = collate(encoded, range(len(queries)))
    names = [n for n in tokenizer.model_input_names if n in reference]
    assert ("token_type_ids" in names) == (family in ("bert", "deberta-v2"))
    for name in names:
        assert batch[name].tolist() == reference[name], (family, name)
    assert set(batch) == set(names)  # no input the model does not take


def test_the_query_budget_keeps_the_querys_first_tokens_in_every_family(family_model):
    from transformers import AutoTokenizer

    _, folder = family_model
    tokenizer = AutoTokenizer.from_pretrained(folder)
    query, document = " ".join(WORDS * 3), "les plantes transforment la lumière en sucre"
    kept = tokenizer(query, add_special_tokens=False)["input_ids"][:5]
    ids, _ = encode_pairs(tokenizer, [query], [document], 64, query_tokens=5).pair(0)
    # The tokenizer's own pair for a one-word query, that word's ids replaced by the query's first five.
    own, word = tokenizer("côte", document)["input_ids"], tokenizer("côte", add_special_tokens=False)["input_ids"]
    at = next(i for i in range(len(own)) if own[i : i + len(word)] == word)
    assert ids.tolist() == own[:at] + kept + own[at + len(word) :]


@pytest.mark.integration
def test_each_family_trains_is_judged_registered_and_served_as_it_was_trained(family_model, mongo_server_url, tmp_path):
    from pymongo import MongoClient
    from sentence_transformers import CrossEncoder

    from eduranker import champion
    from eduranker.serving import ChampionReranker
    from eduranker.store import versions
    from eduranker.variants import BF16, FP32
    from tests.conftest import make_settings
    from tests.trained_image import build as run_demo_job

    family, folder = family_model
    settings = make_settings(mongo_server_url, str(tmp_path / "models"), str(folder))
    image = run_demo_job(settings, tmp_path, seed=1, job_id=f"job-{family}")
    version = image.outcome["version"]
    assert [stage for stage, _ in image.stages][-1] == "write_artifacts", image.stages
    meta = json.loads((image.models_dir / "versions" / version / "training_metadata.json").read_text())
    assert meta["base_model"] == str(folder) and meta["hyperparameters"]["max_length"] == 48
    with MongoClient(mongo_server_url, tz_aware=True) as client:
        db = client[image.db_name]
        assert versions.get_version(db, version)["version"] == version  # registered
        if not image.outcome["promoted"]:  # a random tiny model may not clear the gate: serving is the point here
            champion.promote(db, image.models_dir, version, by="test", reason="test", force=True)

    query = "Qu’est-ce que la photosynthèse ? " + " ".join(WORDS * 8)  # past the 64-token query budget
    documents = ["Les plantes transforment la lumière en sucre.", "Fractions et nombres décimaux.", FRENCH[2]]
    served = {}
    for variant in (FP32, BF16):
        reranker = ChampionReranker(image.models_dir, device="cpu", poll_seconds=60, variant=variant)  # 256 asked
        try:
            loaded = reranker._serving.champion
            assert (reranker.version, loaded.max_length, loaded.query_tokens) == (version, 48, 64)
            assert type(loaded.model).__name__.lower().startswith(family.replace("-", ""))
            served[variant] = np.array(reranker.rerank(query, documents).scores)
        finally:
            reranker.close()
    assert np.isfinite(served[FP32]).all() and np.abs(served[BF16] - served[FP32]).max() < 0.05
    # Within the budget, the search API's own CrossEncoder scores the version as the reranker does.
    short = "Qu’est-ce que la photosynthèse ?"
    cross = CrossEncoder(str(image.models_dir / "versions" / version), max_length=48, device="cpu")
    reranker = ChampionReranker(image.models_dir, device="cpu", poll_seconds=60, variant=FP32)
    try:
        ours = np.array(reranker.rerank(short, documents).scores)
    finally:
        reranker.close()
    np.testing.assert_allclose(ours, cross.predict([(short, d) for d in documents]), atol=1e-5)


@pytest.mark.parametrize(
    ("hyperparameters", "model_max_length", "expected"),
    [
        ({"max_length": 48, "query_tokens": 64}, 48, (48, 64)),  # a version: as it was trained
        ({"max_length": 128, "query_tokens": 32}, 10**30, (128, 32)),  # a tokenizer without a limit
        ({"max_length": 512, "query_tokens": 64}, 256, (256, 64)),  # never past what the model can read
        ({"query_tokens": 64}, 512, (256, 64)),  # no recorded length: the caller's
        ({}, 512, (256, None)),  # a version from before the query budget: no cut
        (None, 512, (256, 64)),  # no metadata (the base model): the caller's length, today's budget
    ],
)
def test_a_version_is_served_the_inputs_it_was_trained_with(tmp_path, hyperparameters, model_max_length, expected):
    from types import SimpleNamespace

    from eduranker.serving.loaded import version_inputs

    if hyperparameters is not None:
        (tmp_path / "training_metadata.json").write_text(json.dumps({"hyperparameters": hyperparameters}))
    inputs = version_inputs(tmp_path, SimpleNamespace(model_max_length=model_max_length), 256)
    assert (inputs.max_length, inputs.query_tokens) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_family_fine_tunes_in_fp32_and_bf16_with_its_vocabulary_frozen(family_model, precision):
    import math

    import torch

    from eduranker.pipeline.model_io import load_cross_encoder
    from eduranker.pipeline.training import TrainConfig, fine_tune

    _, folder = family_model
    model, tokenizer = load_cross_encoder(folder, torch.device("cpu"), seed=0)
    vocabulary = model.get_input_embeddings().weight.detach().clone()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    queries, documents = FRENCH[:4] * 4, FRENCH[4:] * 4
    config = TrainConfig(epochs=1, batch_size=4, learning_rate=1e-3, head_learning_rate=1e-2, max_length=32, seed=3,
                         freeze_embeddings=True, precision=precision)  # fmt: skip
    stats = fine_tune(model, tokenizer, queries, documents, [1.0, 0.0] * 8, config, device=torch.device("cpu"))
    assert stats.precision == precision and stats.steps == 4 and all(math.isfinite(x) for x in stats.epoch_losses)
    assert torch.equal(model.get_input_embeddings().weight, vocabulary)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any("classifier" in n for n in moved) and any("layer.1." in n for n in moved)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))  # every family's dropouts
