"""The exported-graph variants (openvino, onnx): the worker writes the graph beside a version, serving
runs it in its runtime and ranks as the version's own weights do; without the file, the runtime or a
readable graph the version is served as the nearest variant it has. And `score_both`, the two models of
an interleaved request scored from one encoding."""

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from eduranker.models_dir import point_champion, version_dir
from eduranker.pipeline.model_io import load_cross_encoder, save_cross_encoder
from eduranker.pipeline.precision import cpu_has_native_bf16
from eduranker.pipeline.variant_io import build_variant, read_description
from eduranker.serving import ChampionReranker
from eduranker.serving import loaded as loaded_module
from eduranker.serving.graph import GraphRunner
from eduranker.serving.loaded import load_checked, overlap_pays, score_both
from eduranker.variants import GRAPH_FILE, variant_dir

QUERY = "how do plants make food"
# Lengths from one word to past max_length: batches of two pad, so a mask fed to the wrong input shows.
DOCS = ["Photosynthesis explained with diagrams", "Leaves", "Steam engines and factories " * 9, "The quadratic formula",
        "Chlorophyll absorbs light, mostly red and blue, and the plant turns it into sugar", "x"]  # fmt: skip
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_path):
    """v0001 written with both graph variants built beside it; v0002 the same version without them."""
    root = tmp_path_factory.mktemp("models")
    model, tokenizer = load_cross_encoder(tiny_model_path, CPU, seed=3)
    folder = version_dir(root, "v0001")
    folder.mkdir(parents=True)
    save_cross_encoder(model, tokenizer, folder, 48)
    described = {name: build_variant(model, folder, name) for name in ("openvino", "onnx")}
    (folder / "training_metadata.json").write_text(json.dumps({"serving_variant": described["openvino"]}))
    shutil.copytree(folder, version_dir(root, "v0002"), ignore=shutil.ignore_patterns("variants"))
    return root


def load(models, version: str, variant: str, batch_size: int = 2, max_length: int = 48):
    return load_checked(version_dir(models, version), version, CPU, max_length, batch_size, variant)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["onnx", "openvino"])
def test_a_version_written_with_a_graph_is_served_from_it_and_ranks_like_fp32(models, variant):
    folder = version_dir(models, "v0001")
    described = read_description(folder, variant)
    assert described["files"] == [f"variants/{variant}/{GRAPH_FILE}"] and (folder / described["files"][0]).is_file()
    assert described["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]  # the model's forward order
    graph = onnx.load(str(folder / described["files"][0]), load_external_data=False)
    assert [i.name for i in graph.graph.input] == described["inputs"]
    fp32, served = load(models, "v0001", "fp32"), load(models, "v0001", variant)
    assert served.variant == variant and isinstance(served.model, GraphRunner)
    ours, reference = served.score(QUERY, DOCS), fp32.score(QUERY, DOCS)
    # onnx computes in fp32; openvino in bf16 on a CPU with native bf16 (its rounding, as bf16 autocast).
    tolerance = 5e-3 if variant == "openvino" and cpu_has_native_bf16() else 1e-5
    np.testing.assert_allclose(ours, reference, atol=tolerance, rtol=0)
    assert len(set(np.round(reference, 4))) > 1  # a head that scores all pairs alike would pass trivially


def test_a_version_without_the_graph_is_served_as_the_nearest_variant(models):
    point_champion(models, "v0002")
    assert read_description(version_dir(models, "v0002"), "openvino") is None
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert load(models, "v0002", "openvino").variant == expected
    assert load(models, "v0002", "onnx").variant == "fp32"
    ranker = ChampionReranker(models, device="cpu", variant="openvino", max_length=48, poll_seconds=3600)
    try:
        assert ranker._serving.champion.variant == expected
        assert sorted(ranker.rerank(QUERY, DOCS).order) == list(range(len(DOCS)))
    finally:
        ranker.close()


def test_a_process_without_the_runtime_serves_the_nearest_variant(models, monkeypatch):
    monkeypatch.setattr(loaded_module, "runtime_available", lambda runtime: False)
    assert load(models, "v0001", "onnx").variant == "fp32"
    assert load(models, "v0001", "openvino").variant == ("bf16" if cpu_has_native_bf16() else "fp32")


@pytest.mark.parametrize("variant", ["onnx", "openvino"])
def test_a_graph_that_does_not_load_leaves_the_version_served(models, tmp_path, variant):
    shutil.copytree(version_dir(models, "v0001"), version_dir(tmp_path, "v0003"))
    (variant_dir(version_dir(tmp_path, "v0003"), variant) / GRAPH_FILE).write_bytes(b"not a graph")
    served = load(tmp_path, "v0003", variant)
    assert served.variant in ("bf16", "fp32") and not isinstance(served.model, GraphRunner)
    assert len(served.score(QUERY, DOCS)) == len(DOCS)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [True, False])
def test_score_both_gives_each_model_its_own_scores_from_one_encoding(models, overlap, monkeypatch):
    first, second = load(models, "v0001", "fp32"), load(models, "v0001", "onnx")
    assert first.reads == second.reads  # the same tokenizer and cuts: one encoding serves both
    encodes = []
    real = loaded_module.encode_query_documents
    monkeypatch.setattr(loaded_module, "encode_query_documents", lambda *a, **k: encodes.append(a[0]) or real(*a, **k))
    a, b = score_both(first, second, QUERY, DOCS, overlap=overlap)
    assert encodes == [first.tokenizer]
    np.testing.assert_allclose(a, first.score(QUERY, DOCS), atol=1e-7, rtol=0)
    np.testing.assert_allclose(b, second.score(QUERY, DOCS), atol=1e-7, rtol=0)
    assert score_both(first, second, QUERY, [])[0].size == 0


def test_score_both_encodes_for_each_model_where_they_read_text_differently(models):
    first, second = load(models, "v0001", "fp32"), load(models, "v0001", "fp32", max_length=16)
    assert first.reads != second.reads
    a, b = score_both(first, second, QUERY, DOCS)
    np.testing.assert_allclose(a, first.score(QUERY, DOCS), atol=1e-7, rtol=0)
    np.testing.assert_allclose(b, second.score(QUERY, DOCS), atol=1e-7, rtol=0)
    assert np.abs(a - b).max() > 1e-4  # the long document is cut at 16 tokens for the second


def test_a_failure_in_the_overlapped_scoring_reaches_the_request(models):
    first = load(models, "v0001", "fp32")

    def broken(**batch):
        raise RuntimeError("the second model failed")

    second = dataclasses.replace(first, model=broken)
    with pytest.raises(RuntimeError, match="second model failed"):
        score_both(first, second, QUERY, DOCS, overlap=True)


@pytest.mark.parametrize(
    ("cores", "threads", "in_flight", "pays"),
    [
        (2, 1, 0, True),  # one request on two cores: the second scoring takes the idle core
        (2, 1, 1, False),  # another request is scoring: both cores are taken
        (2, 2, 0, False),  # one request already uses both cores
        (4, 1, 2, True),
        (4, 1, 3, False),
        (4, 2, 0, True),
        (1, 1, 0, False),
        (8, 0, 0, True),  # a thread count of 0 counts as one
    ],
)
def test_overlap_pays_only_where_the_cores_are_free(cores, threads, in_flight, pays):
    assert overlap_pays(cores, threads, in_flight) is pays


@pytest.mark.parametrize(
    ("scores", "gap", "top", "ties"),
    [
        ([0.9, 0.5, 0.1], 1e-3, 10, []),  # well apart: nothing to rescore
        ([0.5, 0.9, 0.5004], 1e-3, 10, [0, 2]),  # two near-equal documents, wherever they stand
        ([0.9, 0.8995, 0.899, 0.1], 1e-3, 10, [0, 1, 2]),  # a chain of near ties
        ([0.9, 0.8, 0.7995, 0.1], 1e-3, 2, [1, 2]),  # the second and the third: the edge of the first two
        ([0.9, 0.8, 0.7, 0.6995], 1e-3, 2, []),  # the third and fourth: the first two stay as they are
        ([0.9, 0.8, 0.5, 0.4995], 1e-3, 1, []),  # below the first two: no place in the ranking's top moves
        ([0.3, 0.3], 1e-3, 10, [0, 1]),  # equal
        ([0.7], 1e-3, 10, []),
    ],
)
def test_near_ties_are_the_documents_a_small_error_could_swap_in_the_top_of_the_ranking(scores, gap, top, ties):
    from eduranker.pipeline.scoring import near_ties

    assert near_ties(np.asarray(scores), gap, top).tolist() == ties


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 runs in fp32 on this CPU: nothing to rescore")
@pytest.mark.parametrize("variant", ["bf16", "openvino"])
def test_near_ties_of_a_bf16_variant_are_rescored_in_fp32(models, variant):
    fp32, served = load(models, "v0001", "fp32"), load(models, "v0001", variant)
    assert served.exact is not None and fp32.exact is None and load(models, "v0001", "onnx").exact is None
    reference = fp32.score(QUERY, DOCS)
    assert np.abs(served.score(QUERY, DOCS) - reference).max() > 1e-6  # bf16's own scores differ a little
    every_one_a_tie = dataclasses.replace(served, tie_gap=1.0)
    np.testing.assert_allclose(every_one_a_tie.score(QUERY, DOCS), reference, atol=1e-5, rtol=0)


def test_a_model_the_exporter_cannot_trace_leaves_the_version_written_without_the_graph(tmp_path):
    """The worker still registers the version (a new model family the exporter fails on, say)."""
    described = build_variant(torch.nn.Linear(2, 1), tmp_path, "openvino")  # no config: the export fails
    assert described["files"] == [] and "error" in described
    assert read_description(tmp_path, "openvino") is None and not variant_dir(tmp_path, "openvino").exists()
