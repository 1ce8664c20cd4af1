"""Fine-tuning's precision plans. bf16 and fp16 run on the CPU here, so the branches a GPU takes
(autocast, loss scaling, the fused optimizer) run in every CI build."""

import math

import pytest
import torch

from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.precision import choose_precision
from eduranker.pipeline.training import TrainConfig, build_optimisation, fine_tune, prepare_data, train_step

CPU = torch.device("cpu")
QUERIES = ["photosynthesis", "fractions", "vaccines", "algebra"] * 6
DOCUMENTS = ["Plants turn light into sugar.", "Roman emperors.", "How vaccines work.", "Desert plants."] * 6
LABELS = [1.0, 0.0, 1.0, 0.0] * 6


@pytest.mark.parametrize(
    ("device", "requested", "dtype", "scaled", "fused"),
    [
        ("cpu", "auto", None, False, False),
        ("cpu", "fp32", None, False, False),
        ("cpu", "bf16", torch.bfloat16, False, True),
        ("cpu", "fp16", torch.float16, True, True),
        ("cuda", "fp32", None, False, True),
        ("cuda", "fp16", torch.float16, True, True),
    ],
)
def test_precision_plan(device, requested, dtype, scaled, fused):
    plan = choose_precision(torch.device(device), requested)
    assert (plan.autocast_dtype, plan.scale_loss, plan.fused_optimizer) == (dtype, scaled, fused)
    assert plan.pin_memory == (device == "cuda" and dtype is not None)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision(CPU, "fp8")


def _config(precision: str, **overrides) -> TrainConfig:
    values = dict(epochs=1, batch_size=8, learning_rate=1e-4, head_learning_rate=1e-2, max_length=32, seed=3)
    return TrainConfig(**{**values, **overrides}, precision=precision)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_step_on_the_accelerated_path_runs_in_low_precision_and_updates_the_weights(
    tiny_model_path, precision, dtype
):
    model, tokenizer = load_cross_encoder(tiny_model_path, CPU, seed=0)
    config = _config(precision)
    plan = choose_precision(CPU, precision)
    data = prepare_data(tokenizer, QUERIES[:8], DOCUMENTS[:8], LABELS[:8], config.max_length)
    opt = build_optimisation(model, config, data, plan, CPU)
    seen: list[torch.dtype] = []
    model.classifier.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = model.classifier.weight.detach().clone()

    from eduranker.pipeline.encoding import collate

    loss = train_step(model, collate(data.encoded, range(8)), data.labels, opt, plan, max_grad_norm=1.0)
    assert seen == [dtype]  # the head ran under autocast
    assert math.isfinite(loss)
    assert model.classifier.weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model.classifier.weight)
    assert opt.scaler.is_enabled() == (precision == "fp16")
    assert opt.optimizer.defaults["fused"] is True


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_fine_tune_runs_every_precision_to_the_end(tiny_model_path, precision):
    model, tokenizer = load_cross_encoder(tiny_model_path, CPU, seed=0)
    steps = []
    stats = fine_tune(
        model,
        tokenizer,
        QUERIES,
        DOCUMENTS,
        LABELS,
        _config(precision, epochs=2),
        device=CPU,
        on_step=lambda epoch, step, total, loss: steps.append((epoch, step, total)),
    )
    assert stats.precision == precision
    assert stats.steps == len(steps) == 6 and steps[-1] == (2, 6, 6)
    assert stats.pairs_seen == 2 * len(QUERIES)
    assert all(math.isfinite(x) for x in stats.epoch_losses)
    assert stats.as_dict()["precision"] == precision
    assert not model.training
