"""Attention in fp32 inside a bf16 step on a CPU (eduranker/pipeline/attention.py): it runs in fp32, it
keeps the padding mask, it gives the scores bf16 attention gives, and the model is left as it was."""

import pytest
import torch
import torch.nn.functional as F

from eduranker.pipeline.attention import fp32_attention
from eduranker.pipeline.model_io import load_cross_encoder

CPU = torch.device("cpu")
QUERIES = ["photosynthesis in plants", "fractions"]
DOCUMENTS = ["Plants turn light into sugar in their leaves, using water and carbon dioxide.", "Roman emperors."]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_path):
    model, tokenizer = load_cross_encoder(tiny_model_path, CPU, seed=0)
    model.train(False)  # no dropout: forward passes are comparable
    return model, tokenizer


def _logits(model, tokenizer, queries, documents) -> torch.Tensor:
    batch = tokenizer(queries, documents, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**batch).logits.float().view(-1)


@pytest.fixture()
def attention_dtypes(monkeypatch):
    """The dtypes SDPA is called with (transformers calls it through torch.nn.functional)."""
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention

    def recording(query, *args, **kwargs):
        seen.append(query.dtype)
        return real(query, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


def test_inside_a_cpu_bf16_run_attention_takes_fp32_and_the_rest_stays_bf16(model_and_tokenizer, attention_dtypes):
    model, tokenizer = model_and_tokenizer
    head: list[torch.dtype] = []
    hook = model.classifier.register_forward_hook(lambda _m, _i, out: head.append(out.dtype))
    try:
        with fp32_attention(model, torch.bfloat16, CPU) as active:
            _logits(model, tokenizer, QUERIES, DOCUMENTS)
    finally:
        hook.remove()
    assert active
    assert attention_dtypes == [torch.float32] * model.config.num_hidden_layers
    assert head == [torch.bfloat16]  # the projections and the head still ran under bf16 autocast


def _cls(model, tokenizer, queries, documents) -> torch.Tensor:
    batch = tokenizer(queries, documents, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(**batch, output_hidden_states=True).hidden_states[-1][:, 0].float()


def test_the_padding_mask_is_kept(model_and_tokenizer):
    """A short pair encoded beside a long one (so padded) encodes as it does alone: attention ignored the
    padding. Without SDPA's mask function beside the attention, transformers passes no mask: the [CLS]
    state then moves by 0.43 here, against 0.005 of bf16 rounding with the mask."""
    model, tokenizer = model_and_tokenizer
    with fp32_attention(model, torch.bfloat16, CPU):
        together = _cls(model, tokenizer, QUERIES, DOCUMENTS)
        alone = _cls(model, tokenizer, QUERIES[1:], DOCUMENTS[1:])
    assert (together[1] - alone[0]).abs().max() < 0.05


def test_scores_match_bf16_attention(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    queries, documents = QUERIES * 4, DOCUMENTS + DOCUMENTS[::-1] + DOCUMENTS + DOCUMENTS[::-1]
    plain = _logits(model, tokenizer, queries, documents)
    with fp32_attention(model, torch.bfloat16, CPU):
        ours = _logits(model, tokenizer, queries, documents)
    assert torch.allclose(plain, ours, atol=5e-2)  # bf16's own rounding is of this order


@pytest.mark.parametrize(("dtype", "device"), [(None, "cpu"), (torch.float16, "cpu"), (torch.bfloat16, "cuda")])
def test_other_runs_keep_the_models_attention(model_and_tokenizer, dtype, device):
    model, _ = model_and_tokenizer
    with fp32_attention(model, dtype, torch.device(device)) as active:
        assert not active
        assert model.config._attn_implementation == "sdpa"


def test_the_models_attention_is_restored_even_after_an_error(model_and_tokenizer):
    model, _ = model_and_tokenizer
    with pytest.raises(RuntimeError, match="boom"), fp32_attention(model, torch.bfloat16, CPU):
        assert model.config._attn_implementation != "sdpa"
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
