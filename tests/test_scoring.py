"""Our scorer equals sentence-transformers' CrossEncoder on a saved version (the search API's view)."""

import numpy as np
import pytest
import torch

from eduranker.pipeline.model_io import load_cross_encoder, save_cross_encoder
from eduranker.pipeline.scoring import score_pairs

PAIRS = [
    ("photosynthesis", "Plants turn light into sugar."),
    ("photosynthesis", "A timeline of the Roman emperors."),
    ("fractions", "Adding fractions with unlike denominators, step by step, with worked examples " * 5),
    ("the french revolution", "Causes, events and legacy of 1789."),
    ("vaccines", "How vaccines train the immune system."),
    ("vaccines", "Vaccines"),
    ("a rather long question about the water cycle and evaporation over oceans", "Clouds form."),
    ("x", "y"),
    ("algebra", "Solving linear equations in one unknown."),
    ("algebra", "Photosynthesis in desert plants."),
    ("geometry", "Angles in a triangle add up to 180 degrees."),
]


@pytest.fixture(scope="module")
def saved_version(tmp_path_factory, tiny_model_path):
    folder = tmp_path_factory.mktemp("version")
    model, tokenizer = load_cross_encoder(tiny_model_path, torch.device("cpu"), seed=7)
    save_cross_encoder(model, tokenizer, folder, max_length=48)
    return folder


def test_scores_equal_cross_encoder_predict_in_input_order(saved_version):
    from sentence_transformers import CrossEncoder

    queries, documents = zip(*PAIRS, strict=True)
    model, tokenizer = load_cross_encoder(saved_version, torch.device("cpu"), seed=0)
    # A batch smaller than the input: length-sorted batches must come back in the caller's order.
    ours = score_pairs(model, tokenizer, queries, documents, device=torch.device("cpu"), max_length=48, batch_size=4)
    reference = CrossEncoder(str(saved_version), device="cpu").predict(PAIRS, batch_size=4)
    assert ours.shape == (len(PAIRS),)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    assert len(set(np.round(ours, 6))) > 1  # a head that scores all pairs alike would pass trivially


def test_scoring_leaves_the_model_mode_and_handles_no_pairs(saved_version):
    model, tokenizer = load_cross_encoder(saved_version, torch.device("cpu"), seed=0)
    model.train()
    assert score_pairs(model, tokenizer, [], [], device=torch.device("cpu"), max_length=48).size == 0
    score_pairs(model, tokenizer, ["q"], ["d"], device=torch.device("cpu"), max_length=48)
    assert model.training
