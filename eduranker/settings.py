"""One typed settings object, read from the environment once, validated, and passed explicitly.

Each field declares its default and its check in one line (`setting(default, check)`); a concern's
config is built from the fields once (`Settings.config`), so a default is never written twice."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from eduranker.base_models import base_settings, language_problem
from eduranker.indexes import DEFAULT, Index, IndexConfigError, SettingRules, name_problem, parse
from eduranker.secrets import SecretFileError, shown, with_secret_files
from eduranker.setting_checks import (
    absolute_path_or_empty,
    at_least,
    between,
    closed,
    coerce,
    database_name,
    gpu_index,
    hub_revision,
    is_hex_key,
    json_object_or_empty,
    model_list,
    mongo_url,
    no_cap_or_at_least,
    nonempty,
    one_of,
    plain_field_name,
    problem_of,
    secret_url,
    setting,
)
from eduranker.variants import DEFAULT_SERVING_VARIANT, SERVING_VARIANTS

C = TypeVar("C")


class SettingsError(ValueError):
    """A setting with a value outside what it accepts; the message names the variable and the value."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the trainer. Field `foo_bar` is read from environment variable `FOO_BAR`."""

    mongodb_url: str = setting("mongodb://127.0.0.1:27017/?directConnection=true", mongo_url)
    mongodb_db: str = setting("edu_ranker_db", database_name)
    celery_broker_url: str = setting(
        "redis://127.0.0.1:6379/0", secret_url("redis://", "rediss://", "amqp://", "sentinel://")
    )
    celery_result_backend: str = setting(
        "redis://127.0.0.1:6379/1", secret_url("redis://", "rediss://", "rpc://", "db+")
    )
    models_dir: str = setting("models", nonempty("a folder"))
    # Several search indexes, each learning on its own (docs/indexes.md): a JSON object of name →
    # {"owns": {...}, SETTING: value}; empty = one index, `default`, owning all feedback.
    indexes: str = setting("", json_object_or_empty)
    # The index these settings are for: set by `for_index` (never read from the environment), which also
    # applies the index's own settings and points MODELS_DIR at its folder.
    index: str = setting(DEFAULT, name_problem, environment=False)
    # True once made by `for_index`: an index's settings never derive another's (its values would leak).
    bound: bool = setting(False, environment=False)

    # Training job (worker).
    base_model_name: str = setting("cross-encoder/ms-marco-MiniLM-L-6-v2", nonempty("a model"))
    # The hub commit the base model is loaded at, so a retrain never starts from silently changed weights
    # (ignored for a local path). Pinned: the hub's main branch may move at any time.
    base_model_revision: str = setting("c5ee24cb16019beea0893ab7796b1df96625c6b8", hub_revision)
    # The language whose default base (eduranker/base_models.py, docs/languages.md) is used where
    # BASE_MODEL_NAME is not set: it sets BASE_MODEL_NAME, and BASE_MODEL_REVISION where that is not set.
    base_language: str = setting("en", language_problem)
    # Base models a job's `base_model` override may name besides BASE_MODEL_NAME: comma-separated hub
    # names, and any folder under BASE_MODELS_ROOT; both empty = only the configured one (docs/security.md).
    allowed_base_models: str = setting("", model_list)
    base_models_root: str = setting("", absolute_path_or_empty)
    # Reactions one user (or one anonymous search) contributes per UTC day: one account cannot swing
    # the labels (docs/security.md); 0 = no cap.
    max_reactions_per_user_per_day: int = setting(50, at_least(0))
    # Group that may read a version's held-out texts (users' queries); -1 = the models folder's group.
    models_gid: int = setting(-1, at_least(-1))
    num_epochs: int = setting(3, at_least(1))
    batch_size: int = setting(16, at_least(1))
    # Measured on a base whose ranking head starts fresh: 2e-5 barely moves it in 3 epochs (docs/configuration.md).
    learning_rate: float = setting(1e-4, between(0, 1))
    # Only for parameters the checkpoint lacks (a new ranking head); a trained head uses learning_rate.
    head_learning_rate: float = setting(1e-2, between(0, 1))
    max_length: int = setting(256, closed(8, 8192))
    freeze_embeddings: bool = setting(True)
    # auto: bf16 autocast on a GPU (fp16 with loss scaling where bf16 is missing), bf16 on a CPU with
    # native bf16 arithmetic (AVX512-BF16, AMX), fp32 on any other (eduranker/pipeline/precision.py).
    train_precision: str = setting("auto", one_of("auto", "fp32", "bf16", "fp16"))
    seed: int = setting(42, at_least(0))
    min_feedback: int = setting(10, at_least(2))
    test_fraction: float = setting(0.2, closed(0.05, 0.5))
    warm_start: bool = setting(False)
    max_text_chars: int = setting(4000, at_least(1))
    eval_batch_size: int = setting(64, at_least(1))
    task_time_limit: int = setting(3600, at_least(30))
    # A running job writes a heartbeat this often; four missed beats and another delivery may take it over.
    job_heartbeat_seconds: float = setting(15.0, closed(0.1, 600))
    worker_gpu: str = setting("", gpu_index)
    torch_threads: int = setting(0, at_least(0))  # 0 = one per available core
    # On SIGTERM a worker lets a job run this long, then hands it back for another worker (docs/operations.md).
    worker_soft_shutdown_seconds: float = setting(10.0, at_least(0))
    # How the search API's reranker serves a version, and the variant the worker writes beside each version
    # (eduranker/variants.py; the default chosen by bench/serving_latency.py, docs/performance.md).
    serving_variant: str = setting(DEFAULT_SERVING_VARIANT, one_of(*SERVING_VARIANTS))

    # The gate (docs/gate.md: these defaults were chosen by bench/gate_noise.py).
    min_improvement: float = setting(0.005, between(0, 1, open_low=False))
    gate_confidence: float = setting(0.95, between(0.5, 1))
    gate_bootstrap_samples: int = setting(1000, at_least(100))
    min_heldout_pairs: int = setting(40, at_least(4))
    min_heldout_queries: int = setting(8, at_least(2))
    gate_max_regression: float = setting(0.02, between(0, 1, open_low=False))
    # The stable split (docs/gate.md): empty = a random key, made once and kept in MongoDB; a set
    # key (hex, 32+ digits) that differs from the recorded one starts a new evaluation epoch.
    split_key: str = setting("", is_hex_key)
    # Per-slice gating: the resource field that names a slice, and the held-out pairs a slice needs
    # before it is judged on its own (below that its interval is too wide to show anything).
    slice_field: str = setting("subject", plain_field_name)
    gate_slice_min_pairs: int = setting(100, at_least(10))

    # Producer thresholds (the trigger: producer/policy.py's `Thresholds` takes them by name).
    train_min_feedback: int = setting(250, at_least(2))
    train_min_minority: float = setting(0.2, closed(0, 0.5))
    train_new_feedback: int = setting(100, at_least(1))
    train_cooldown_seconds: float = setting(600.0, at_least(0))
    auto_retry_limit: int = setting(3, at_least(0))
    producer_lease_seconds: float = setting(15.0, closed(1, 3600))
    job_resend_after_seconds: float = setting(300.0, at_least(1))
    job_max_resends: int = setting(3, at_least(0))
    # A job handed back (a retryable error: a server unreachable, a timeout) this many times fails with the
    # last reason: a persistent "retryable" error (a too-short socketTimeoutMS) must not loop forever.
    job_max_handbacks: int = setting(5, at_least(1))
    # Manual jobs that may wait for the slot at once; one more is refused when asked for (docs/manual-jobs.md).
    max_waiting_jobs: int = setting(5, at_least(1))

    # Live metrics per version and the online guard (producer).
    online_refresh_seconds: float = setting(60.0, at_least(1))
    online_guard: bool = setting(True)
    online_guard_min_feedback: int = setting(200, at_least(10))
    online_guard_confidence: float = setting(0.99, between(0.5, 1))

    # Promotions (docs/online.md). "interleave": a candidate that passes the offline screen becomes the
    # challenger, served interleaved with the champion by ChampionReranker, and the producer promotes or
    # rejects it on what users do with those lists (the sequential test). "offline": the offline gate
    # promotes on held-out pairs alone (for a search API that serves models/champion without it).
    promotion_mode: str = setting("interleave", one_of("interleave", "offline"))
    # A false promotion of a challenger no better than the champion: at most 1 - this, however often the
    # producer looks (bench/challenge_decisions.py measures it).
    challenge_confidence: float = setting(0.95, between(0.5, 1))
    challenge_min_feedback: int = setting(100, at_least(10))
    # No decision by then: the challenge ends, the champion stays (its reason says so).
    challenge_max_impressions: int = setting(20_000, at_least(100))
    challenge_max_days: float = setting(14.0, between(0, 365))
    # No interleaved search served this long after a challenge began: the search API does not interleave
    # (it serves models/champion itself), so the offline gate decides, and `eduranker status` says so.
    challenge_fallback_seconds: float = setting(3600.0, at_least(60))

    # Metrics and health (producer, docs/alerts.md): every producer serves /metrics, /healthz and /readyz
    # on this port (0 = none); its figures are read from the database at most every refresh, whatever
    # the scrape rate, so a scrape costs the database nothing.
    metrics_port: int = setting(9108, closed(0, 65535))
    metrics_refresh_seconds: float = setting(15.0, closed(0.5, 3600))

    # Bounded jobs (docs/retention.md): a job's memory and time stay the same as feedback grows for years.
    # 100,000 pairs train in well under 3 GB of worker memory at MAX_LENGTH 256 (bench/bounded_jobs.py);
    # newer feedback says more about today's users than older feedback. 0 = no cap.
    train_max_pairs: int = setting(100_000, no_cap_or_at_least(100))
    # Held-out pairs the gate judges, the newest of the stable held-out set: 20,000 pairs give an interval
    # of a few thousandths of ROC-AUC, far below MIN_IMPROVEMENT; 0 = no cap.
    gate_max_pairs: int = setting(20_000, no_cap_or_at_least(100))
    # Retention of the models volume (docs/retention.md). Never pruned: the champion, the previous
    # champion, and any version a running job or an online comparison uses.
    # The last champions of the chain whose folders stay, so a rollback (or two) needs no retrain.
    retain_champions: int = setting(3, at_least(2))
    # The newest versions whose folders stay, whatever their status, for inspection of recent jobs.
    retain_versions: int = setting(10, at_least(1))
    # Rejected and retired folders younger than this stay (days); older ones are pruned.
    retain_days: float = setting(14.0, at_least(0))
    # Finished training_jobs documents expire this long after they finished (a TTL index), in days.
    job_retention_days: float = setting(90.0, at_least(1))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            problem = problem_of(f, value)
            if problem:
                raise SettingsError(f"{f.name.upper()}={shown(f.name, value)}: {problem}")
        if self.index not in {i.name for i in self.all_indexes}:
            raise SettingsError(f"index {self.index!r} is not configured (INDEXES names: "
                                f"{', '.join(i.name for i in self.all_indexes)})")  # fmt: skip

    @property
    def all_indexes(self) -> tuple[Index, ...]:
        """The configured indexes, `default` first (eduranker/indexes.py); checked when settings are made."""
        return _indexes(self.indexes)

    @property
    def index_spec(self) -> Index:
        """The index these settings are for."""
        return next(i for i in self.all_indexes if i.name == self.index)

    def for_index(self, name: str) -> Settings:
        """The settings of index `name`: its own values over these, MODELS_DIR pointed at its folder."""
        if self.bound:
            raise ValueError(f"settings already for index {self.index!r}: derive another index's from the process's")
        found = [i for i in self.all_indexes if i.name == name]
        if not found:
            raise SettingsError(f"index {name!r} is not configured (INDEXES names: "
                                f"{', '.join(i.name for i in self.all_indexes)})")  # fmt: skip
        values = dict(found[0].overrides)
        if "base_language" in values:  # the index's own language picks its base, as BASE_LANGUAGE does
            values.update(base_settings(values["base_language"], values))
        return self.with_overrides(index=name, bound=True, models_dir=found[0].models_dir(self.models_dir), **values)

    @property
    def models_root(self) -> str:
        """MODELS_DIR as configured (`models_dir` is this index's folder in it)."""
        return self.models_dir if self.index_spec.is_default else os.path.dirname(self.models_dir.rstrip("/"))

    def each_index(self) -> list[Settings]:
        """The settings of every configured index, `default` first."""
        return [self.for_index(i.name) for i in self.all_indexes]

    # Timings derived from the ones above, in one place so that broker, worker and producer agree.
    @property
    def redelivery_after_s(self) -> float:
        """Redis visibility timeout: an unacked job message is handed out again after this long."""
        return self.task_time_limit + min(600, self.task_time_limit)

    @property
    def job_stale_after_s(self) -> float:
        """Silence after which another delivery of a running job may take it over."""
        return 4 * self.job_heartbeat_seconds

    @property
    def job_requeue_after_s(self) -> float:
        """Silence after which the producer hands a running job back to the queue (its worker is gone)."""
        return 2 * self.job_stale_after_s

    def config(self, cls: type[C]) -> C:
        """One concern's config (the trigger's `Thresholds`, the gate's `GateRule`, training's
        `TrainConfig`), built from these settings: each field of the dataclass `cls` that names a setting
        (`field(metadata={"setting": "train_min_feedback"})`) takes its value, so the config repeats no
        default; its other fields are constants of that concern, with their defaults there."""
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]  # any dataclass
            name = f.metadata.get("setting")
            if name is None:
                continue
            if not hasattr(self, name):
                raise TypeError(f"{cls.__name__}.{f.name} names {name!r}, which is not a setting")
            values[f.name] = getattr(self, name)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        try:  # X_FILE: a secret read from a file (eduranker/secrets.py)
            env = with_secret_files(os.environ if environ is None else environ)
        except SecretFileError as exc:
            raise SettingsError(str(exc)) from None
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or not f.metadata["environment"]:
                continue
            try:
                values[f.name] = coerce(f.type, raw)
            except ValueError as exc:
                raise SettingsError(f"{f.name.upper()}={shown(f.name, raw)}: {exc}") from None
            problem = problem_of(f, values[f.name])
            if problem:  # named with the text as written, not as parsed
                raise SettingsError(f"{f.name.upper()}={shown(f.name, raw)}: {problem}")
        # BASE_LANGUAGE's default base, where BASE_MODEL_NAME (and BASE_MODEL_REVISION) are not set.
        values.update(base_settings(values.get("base_language", "en"), {name.lower() for name in env}))
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(overrides)
        return type(self)(**values)


# Settings of the process, not of an index: an index's configuration may not set them.
PROCESS_WIDE = frozenset(
    {
        "mongodb_url",
        "mongodb_db",
        "celery_broker_url",
        "celery_result_backend",
        "models_dir",
        "bound",
        "indexes",
        "index",
        "metrics_port",
        "metrics_refresh_seconds",
        "producer_lease_seconds",
        "worker_gpu",
        "torch_threads",
        "worker_soft_shutdown_seconds",
        "task_time_limit",
        "job_heartbeat_seconds",
        "job_retention_days",
        "models_gid",
        "base_models_root",
        "allowed_base_models",
    }
)


@functools.lru_cache(maxsize=64)
def _indexes(text: str) -> tuple[Index, ...]:
    """INDEXES parsed and checked, once per text: each index's settings by the settings' own checks."""
    per_index = {f.name.upper(): f for f in fields(Settings) if f.name not in PROCESS_WIDE}
    rules = SettingRules(frozenset(per_index), lambda key, value: problem_of(per_index[key], value),
                         frozenset(name.upper() for name in PROCESS_WIDE))  # fmt: skip
    try:
        return parse(text, rules)
    except IndexConfigError as exc:
        raise SettingsError(str(exc)) from None


def load_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """For entry points: the settings, or exit status 2 with one line naming the bad variable."""
    try:
        return Settings.from_env(environ)
    except SettingsError as exc:
        print(f"invalid setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


@functools.cache
def process_settings() -> Settings:
    """This process's settings, read from the environment once, on first use (the worker and its Celery
    configuration share them); entry points that take settings explicitly call `load_or_exit` instead."""
    return load_or_exit()
