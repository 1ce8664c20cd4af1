"""CUDA out-of-memory halves the batch and starts again from the untouched weights (no GPU needed)."""

import numpy as np
import pytest
import torch

import worker.stages as stages
from eduranker.pipeline.pairs import Pair
from eduranker.pipeline.split import SplitKey
from eduranker.pipeline.training import TrainStats
from eduranker.settings import Settings


def _split(n=8):
    from datetime import UTC, datetime

    pairs = [Pair(str(i), "q", "r", f"query {i}", f"doc {i}", float(i % 2), datetime.now(UTC)) for i in range(n)]
    return stages.Split(train=pairs, test=[], key=SplitKey(1, "00" * 32, 0.2))


class Progress:
    """What fine-tuning reports to its run (the run's database side is not under test here)."""

    db = None  # the stop check's database: never read, fine_tune is replaced here

    def __init__(self):
        self.seen = []

    def progress(self, stage, **details):
        self.seen.append((stage, details))

    def update(self, what, **fields):
        self.seen.append((what, fields))


def _baseline(source):
    return stages.Baseline(None, source, [], [], {}, np.zeros(0), [], np.zeros(0), {})


def test_out_of_memory_halves_the_batch_until_it_fits(monkeypatch, tiny_model_path):
    seen_batches, loads = [], []

    def fake_fine_tune(model, tokenizer, queries, documents, labels, config, *, device, on_step=None, should_stop=None):
        seen_batches.append(config.batch_size)
        if config.batch_size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return TrainStats(steps=1)

    real_load = stages.load_cross_encoder

    def counting_load(source, device, seed, revision=None):
        loads.append(source)
        return real_load(source, device, seed, revision=revision)

    monkeypatch.setattr(stages, "fine_tune", fake_fine_tune)
    monkeypatch.setattr(stages, "load_cross_encoder", counting_load)
    s = Settings(base_model_name=tiny_model_path, batch_size=16, max_length=16, num_epochs=1)
    candidate = stages.fine_tune_candidate(s, _split(), _baseline(tiny_model_path), torch.device("cpu"), Progress())
    assert seen_batches == [16, 8, 4]
    assert candidate.config.batch_size == 4
    assert candidate.oom_retries == [{"batch_size": 16, "retry_with": 8}, {"batch_size": 8, "retry_with": 4}]
    assert loads == [tiny_model_path] * 3  # fresh start weights for each try


def test_other_errors_are_not_retried(monkeypatch, tiny_model_path):
    def broken(*args, **kwargs):
        raise ValueError("bad input")

    monkeypatch.setattr(stages, "fine_tune", broken)
    s = Settings(base_model_name=tiny_model_path, batch_size=16, max_length=16, num_epochs=1)
    with pytest.raises(ValueError):
        stages.fine_tune_candidate(s, _split(), _baseline(tiny_model_path), torch.device("cpu"), Progress())
