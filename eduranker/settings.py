"""One typed settings object, read from the environment once and passed explicitly."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Every knob of the trainer. Field `foo_bar` is read from environment variable `FOO_BAR`."""

    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongodb_db: str = "edu_ranker_db"
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_result_backend: str = "redis://127.0.0.1:6379/1"
    models_dir: str = "models"

    # Training job (worker).
    base_model_name: str = "cross-encoder/ms-marco-MiniLM-L-6-v2"
    num_epochs: int = 3
    batch_size: int = 16
    # Measured on a base whose ranking head starts fresh: 2e-5 barely moves it in 3 epochs (README).
    learning_rate: float = 1e-4
    # Only for parameters the checkpoint lacks (a new ranking head); a trained head uses learning_rate.
    head_learning_rate: float = 1e-2
    max_length: int = 256
    freeze_embeddings: bool = True
    seed: int = 42
    min_feedback: int = 10
    min_improvement: float = 0.005
    test_fraction: float = 0.2
    warm_start: bool = False
    max_text_chars: int = 4000
    eval_batch_size: int = 64
    task_time_limit: int = 3600
    # A running job writes a heartbeat this often; four missed beats and another delivery may take it over.
    job_heartbeat_seconds: float = 15.0
    worker_gpu: str = ""
    torch_threads: int = 0  # 0 = one per available core

    # Producer thresholds.
    train_min_feedback: int = 50
    train_min_minority: float = 0.2
    train_new_feedback: int = 100
    train_cooldown_seconds: float = 600.0

    # Timings derived from the two above, in one place so that broker, worker and producer agree.
    @property
    def redelivery_after_s(self) -> float:
        """Redis visibility timeout: an unacked job message is handed out again after this long."""
        return self.task_time_limit + min(600, self.task_time_limit)

    @property
    def job_stale_after_s(self) -> float:
        return 4 * self.job_heartbeat_seconds

    @property
    def job_dead_after_s(self) -> float:
        """Silence after which a running job is failed: its redelivery has had its chance by then."""
        return self.redelivery_after_s + 2 * self.job_stale_after_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is None:
                continue
            try:
                values[field.name] = _coerce(field.type, raw)
            except ValueError as exc:
                raise ValueError(f"{field.name.upper()}={raw!r}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(overrides)
        return Settings(**values)


def _coerce(type_name: Any, raw: str) -> Any:
    # Field types are strings because of `from __future__ import annotations`.
    name = type_name if isinstance(type_name, str) else type_name.__name__
    if name == "bool":
        return _parse_bool(raw)
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    return raw
