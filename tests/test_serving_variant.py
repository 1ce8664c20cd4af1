"""Serving variants: the worker writes int8 beside a version, serving loads it (never converting), a
version without it is served in fp32, and a bad SERVING_VARIANT stops the process with one line."""

import json
import shutil

import numpy as np
import pytest
import torch

from eduranker.models_dir import point_champion, version_dir
from eduranker.pipeline.model_io import load_cross_encoder, save_cross_encoder
from eduranker.pipeline.variant_io import build_variant, read_description
from eduranker.serving import ChampionReranker
from eduranker.settings import Settings, load_or_exit
from eduranker.variants import DEFAULT_SERVING_VARIANT, variant_dir

QUERY = "how do plants make food"
DOCS = ["Photosynthesis explained with diagrams", "Steam engines and factories", "The quadratic formula", "Leaves"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_path):
    """v0001 written as the worker writes it with SERVING_VARIANT=int8; v0002 without any variant."""
    root = tmp_path_factory.mktemp("models")
    model, tokenizer = load_cross_encoder(tiny_model_path, torch.device("cpu"), seed=1)
    folder = version_dir(root, "v0001")
    folder.mkdir(parents=True)
    save_cross_encoder(model, tokenizer, folder, 48)
    described = build_variant(model, folder, "int8")
    (folder / "training_metadata.json").write_text(json.dumps({"serving_variant": described}))
    shutil.copytree(folder, version_dir(root, "v0002"), ignore=shutil.ignore_patterns("variants"))
    return root


def served(ranker: ChampionReranker) -> tuple[str, torch.nn.Module]:
    loaded = ranker._serving.champion
    return loaded.variant, loaded.model


@pytest.mark.slow
def test_a_version_written_with_int8_is_served_int8_and_ranks_like_fp32(models):
    meta = json.loads((version_dir(models, "v0001") / "training_metadata.json").read_text())
    assert meta["serving_variant"]["variant"] == "int8"
    assert meta["serving_variant"] == read_description(version_dir(models, "v0001"), "int8")
    assert (models / "versions" / "v0001" / meta["serving_variant"]["files"][0]).is_file()
    point_champion(models, "v0001")
    fp32 = ChampionReranker(models, device="cpu", variant="fp32", max_length=48, poll_seconds=3600)
    int8 = ChampionReranker(models, device="cpu", variant="int8", max_length=48, poll_seconds=3600)
    try:
        assert served(fp32)[0] == "fp32" and served(int8)[0] == "int8"
        modules = list(served(int8)[1].modules())
        assert not any(type(m) is torch.nn.Linear for m in modules)
        assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in modules) == 38  # 6 layers x 6 + 2
        a, b = fp32.rerank(QUERY, DOCS), int8.rerank(QUERY, DOCS)
        assert a.version == b.version == "v0001"
        assert sorted(b.order) == list(range(len(DOCS)))
        assert np.abs(np.asarray(a.scores) - np.asarray(b.scores)).max() < 0.02
        assert b.scores != a.scores  # it is a different model: int8 weights, not the fp32 ones
    finally:
        fp32.close()
        int8.close()


def test_a_version_without_the_asked_variant_is_served_in_fp32(models):
    assert read_description(version_dir(models, "v0002"), "int8") is None
    assert not variant_dir(version_dir(models, "v0002"), "int8").exists()
    point_champion(models, "v0002")
    ranker = ChampionReranker(models, device="cpu", variant="int8", max_length=48, poll_seconds=3600)
    try:
        assert served(ranker)[0] == "fp32"
        assert len(ranker.rerank(QUERY, DOCS).scores) == len(DOCS)
    finally:
        ranker.close()


def test_bf16_runs_the_fp32_weights_under_autocast(models):
    assert build_variant(torch.nn.Linear(1, 1), models, "bf16")["files"] == []  # nothing to write
    point_champion(models, "v0002")
    ranker = ChampionReranker(models, device="cpu", variant="bf16", max_length=48, poll_seconds=3600)
    try:
        variant, model = served(ranker)
        assert variant == "bf16" and next(model.parameters()).dtype == torch.float32
        assert sorted(ranker.rerank(QUERY, DOCS).order) == list(range(len(DOCS)))
    finally:
        ranker.close()


def test_the_setting_defaults_to_the_measured_variant_and_a_bad_value_exits_with_one_line(capsys):
    assert Settings().serving_variant == DEFAULT_SERVING_VARIANT
    assert Settings.from_env({"SERVING_VARIANT": "bf16"}).serving_variant == "bf16"
    with pytest.raises(SystemExit) as stopped:
        load_or_exit({"SERVING_VARIANT": "int4"})
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SERVING_VARIANT" in err and "int4" in err


def test_the_reranker_refuses_an_unknown_variant(models):
    with pytest.raises(ValueError, match="int4"):
        ChampionReranker(models, device="cpu", variant="int4")


def test_an_int8_file_that_does_not_load_leaves_the_version_served_in_fp32(models, tmp_path):
    """A later torch may not read an older torch's int8 file: the version still serves, in fp32."""
    shutil.copytree(version_dir(models, "v0001"), version_dir(tmp_path, "v0003"))
    (variant_dir(version_dir(tmp_path, "v0003"), "int8") / "model_int8.pt").write_bytes(b"not a state dict")
    point_champion(tmp_path, "v0003")
    ranker = ChampionReranker(tmp_path, device="cpu", variant="int8", max_length=48, poll_seconds=3600)
    try:
        assert served(ranker)[0] == "fp32" and ranker.version == "v0003"
    finally:
        ranker.close()
