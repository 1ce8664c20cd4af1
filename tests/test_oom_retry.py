"""CUDA out-of-memory halves the batch and starts again from the untouched weights (no GPU needed)."""

import pytest
import torch

import worker.candidate as candidate
from worker.pairs import Pair
from worker.training import TrainConfig, TrainStats

pytestmark = pytest.mark.slow


def _pairs(n=8):
    from datetime import UTC, datetime

    return [Pair(str(i), "q", "r", f"query {i}", f"doc {i}", float(i % 2), datetime.now(UTC)) for i in range(n)]


def test_out_of_memory_halves_the_batch_until_it_fits(monkeypatch, tiny_model_path):
    seen_batches, loads = [], []

    def fake_fine_tune(model, tokenizer, queries, documents, labels, config, *, device, on_step=None):
        seen_batches.append(config.batch_size)
        if config.batch_size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return TrainStats(steps=1)

    real_load = candidate.load_cross_encoder

    def counting_load(source, device, seed):
        loads.append(source)
        return real_load(source, device, seed)

    monkeypatch.setattr(candidate, "fine_tune", fake_fine_tune)
    monkeypatch.setattr(candidate, "load_cross_encoder", counting_load)
    model, tok = real_load(tiny_model_path, torch.device("cpu"), 0)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, head_learning_rate=1e-2, max_length=16, seed=0)
    _, stats, used, retries = candidate._train_with_oom_retry(
        model, tok, _pairs(), config, torch.device("cpu"), tiny_model_path, lambda *a, **k: None
    )
    assert seen_batches == [16, 8, 4]
    assert used.batch_size == 4
    assert retries == [{"batch_size": 16, "retry_with": 8}, {"batch_size": 8, "retry_with": 4}]
    assert loads == [tiny_model_path, tiny_model_path]  # fresh start weights for each retry


def test_other_errors_are_not_retried(monkeypatch, tiny_model_path):
    def broken(*args, **kwargs):
        raise ValueError("bad input")

    monkeypatch.setattr(candidate, "fine_tune", broken)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, head_learning_rate=1e-2, max_length=16, seed=0)
    with pytest.raises(ValueError):
        candidate._train_with_oom_retry(None, None, _pairs(), config, torch.device("cpu"), "x", lambda *a, **k: None)
