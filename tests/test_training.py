"""Fine-tuning's precision plans. bf16 and fp16 run on the CPU here, so the branches a GPU takes
(autocast, loss scaling, the fused optimizer) run in every CI build."""

import math

import pytest
import torch

from eduranker.pipeline.model_io import load_cross_encoder
from eduranker.pipeline.precision import choose_precision, cpu_has_native_bf16
from eduranker.pipeline.training import (
    TrainConfig,
    build_optimisation,
    fine_tune,
    prepare_data,
    prepare_model,
    train_step,
)

CPU = torch.device("cpu")
QUERIES = ["photosynthesis", "fractions", "vaccines", "algebra"] * 6
DOCUMENTS = ["Plants turn light into sugar.", "Roman emperors.", "How vaccines work.", "Desert plants."] * 6
LABELS = [1.0, 0.0, 1.0, 0.0] * 6


@pytest.mark.parametrize(
    ("device", "requested", "native_bf16", "dtype", "scaled"),
    [
        ("cpu", "auto", False, None, False),
        ("cpu", "auto", True, torch.bfloat16, False),
        ("cpu", "fp32", True, None, False),
        ("cpu", "bf16", False, torch.bfloat16, False),
        ("cpu", "fp16", False, torch.float16, True),
        ("cuda", "fp32", False, None, False),
        ("cuda", "fp16", False, torch.float16, True),
    ],
)
def test_precision_plan(device, requested, native_bf16, dtype, scaled):
    plan = choose_precision(torch.device(device), requested, native_cpu_bf16=native_bf16)
    assert (plan.autocast_dtype, plan.scale_loss) == (dtype, scaled)
    assert plan.pin_memory == (device == "cuda" and dtype is not None)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(str(with_bf16))
    assert not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision(CPU, "fp8")


def _config(precision: str, **overrides) -> TrainConfig:
    values = dict(epochs=1, batch_size=8, learning_rate=1e-4, head_learning_rate=1e-2, max_length=32, seed=3,
                  freeze_embeddings=True)  # fmt: skip
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
@pytest.mark.slow
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


def _dropouts(model) -> dict[str, float]:
    return {n: m.p for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}


def test_preparing_the_model_freezes_the_vocabulary_and_sets_the_configured_dropouts(tiny_model_path):
    model, _ = load_cross_encoder(tiny_model_path, CPU, seed=0)
    hidden_before = {n: p for n, p in _dropouts(model).items() if not n.endswith("attention.self.dropout")}
    layers = model.config.num_hidden_layers
    assert prepare_model(model, _config("fp32", attention_dropout=0.0, hidden_dropout=None)) == layers
    assert not model.get_input_embeddings().weight.requires_grad
    dropouts = _dropouts(model)
    assert all(p == 0.0 for n, p in dropouts.items() if n.endswith("attention.self.dropout"))
    assert {n: p for n, p in dropouts.items() if n in hidden_before} == hidden_before
    assert all(p > 0 for p in hidden_before.values())

    default, _ = load_cross_encoder(tiny_model_path, CPU, seed=0)  # the job's: every dropout off
    assert prepare_model(default, _config("fp32")) == len(_dropouts(default)) > layers
    assert set(_dropouts(default).values()) == {0.0}

    kept, _ = load_cross_encoder(tiny_model_path, CPU, seed=0)
    assert prepare_model(kept, _config("fp32", attention_dropout=None, hidden_dropout=None)) == 0
    assert set(_dropouts(kept).values()) == {0.1}
