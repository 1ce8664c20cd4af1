"""One typed settings object, read from the environment once, validated, and passed explicitly."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from eduranker.secrets import SecretFileError, example_secret_problem, shown, with_secret_files


class SettingsError(ValueError):
    """A setting with a value outside what it accepts; the message names the variable and the value."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


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
    # The hub commit the base model is loaded at, so a retrain never starts from silently changed weights
    # (ignored for a local path). Pinned: the hub's main branch may move at any time.
    base_model_revision: str = "c5ee24cb16019beea0893ab7796b1df96625c6b8"
    # Base models a job's `base_model` override may name besides BASE_MODEL_NAME: comma-separated hub
    # names, and any folder under BASE_MODELS_ROOT; both empty = only the configured one (docs/security.md).
    allowed_base_models: str = ""
    base_models_root: str = ""
    # Reactions one user (or one anonymous search) contributes per UTC day: one account cannot swing
    # the labels (docs/security.md); 0 = no cap.
    max_reactions_per_user_per_day: int = 50
    # Group that may read a version's held-out texts (users' queries); -1 = the models folder's group.
    models_gid: int = -1
    num_epochs: int = 3
    batch_size: int = 16
    # Measured on a base whose ranking head starts fresh: 2e-5 barely moves it in 3 epochs (README).
    learning_rate: float = 1e-4
    # Only for parameters the checkpoint lacks (a new ranking head); a trained head uses learning_rate.
    head_learning_rate: float = 1e-2
    max_length: int = 256
    freeze_embeddings: bool = True
    # auto: bf16 autocast on a GPU (fp16 with loss scaling where bf16 is missing), fp32 on a CPU.
    train_precision: str = "auto"
    seed: int = 42
    min_feedback: int = 10
    test_fraction: float = 0.2
    warm_start: bool = False
    max_text_chars: int = 4000
    eval_batch_size: int = 64
    task_time_limit: int = 3600
    # A running job writes a heartbeat this often; four missed beats and another delivery may take it over.
    job_heartbeat_seconds: float = 15.0
    worker_gpu: str = ""
    torch_threads: int = 0  # 0 = one per available core
    # On SIGTERM a worker lets a job run this long, then hands it back for another worker (README).
    worker_soft_shutdown_seconds: float = 10.0

    # The gate (README "The gate": these defaults were chosen by bench/gate_noise.py).
    min_improvement: float = 0.005
    gate_confidence: float = 0.95
    gate_bootstrap_samples: int = 1000
    min_heldout_pairs: int = 40
    min_heldout_queries: int = 8
    gate_max_regression: float = 0.02
    # The stable split (README "The gate"): empty = a random key, made once and kept in MongoDB; a set
    # key (hex, 32+ digits) that differs from the recorded one starts a new evaluation epoch.
    split_key: str = ""
    # Per-slice gating: the resource field that names a slice, and the held-out pairs a slice needs
    # before it is judged on its own (below that its interval is too wide to show anything).
    slice_field: str = "subject"
    gate_slice_min_pairs: int = 100

    # Producer thresholds.
    train_min_feedback: int = 250
    train_min_minority: float = 0.2
    train_new_feedback: int = 100
    train_cooldown_seconds: float = 600.0
    auto_retry_limit: int = 3
    producer_lease_seconds: float = 15.0
    job_resend_after_seconds: float = 300.0
    job_max_resends: int = 3
    # A job handed back (a retryable error: a server unreachable, a timeout) this many times fails with the
    # last reason: a persistent "retryable" error (a too-short socketTimeoutMS) must not loop forever.
    job_max_handbacks: int = 5

    # Live metrics per version and the online guard (producer).
    online_refresh_seconds: float = 60.0
    online_guard: bool = True
    online_guard_min_feedback: int = 200
    online_guard_confidence: float = 0.99

    # Metrics and health (producer, docs/alerts.md): every producer serves /metrics, /healthz and /readyz
    # on this port (0 = none); its figures are read from the database at most every refresh, whatever
    # the scrape rate, so a scrape costs the database nothing.
    metrics_port: int = 9108
    metrics_refresh_seconds: float = 15.0

    # Bounded jobs (docs/retention.md): a job's memory and time stay the same as feedback grows for years.
    # 100,000 pairs train in well under 3 GB of worker memory at MAX_LENGTH 256 (bench/bounded_jobs.py);
    # newer feedback says more about today's users than older feedback. 0 = no cap.
    train_max_pairs: int = 100_000
    # Held-out pairs the gate judges, the newest of the stable held-out set: 20,000 pairs give an interval
    # of a few thousandths of ROC-AUC, far below MIN_IMPROVEMENT; 0 = no cap.
    gate_max_pairs: int = 20_000
    # Retention of the models volume (docs/retention.md). Never pruned: the champion, the previous
    # champion, and any version a running job or an online comparison uses.
    # The last champions of the chain whose folders stay, so a rollback (or two) needs no retrain.
    retain_champions: int = 3
    # The newest versions whose folders stay, whatever their status, for inspection of recent jobs.
    retain_versions: int = 10
    # Rejected and retired folders younger than this stay (days); older ones are pruned.
    retain_days: float = 14.0
    # Finished training_jobs documents expire this long after they finished (a TTL index), in days.
    job_retention_days: float = 90.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _problem(f.name, f.type, value)
            if problem:
                raise SettingsError(f"{f.name.upper()}={shown(f.name, value)}: {problem}")

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        try:  # X_FILE: a secret read from a file (eduranker/secrets.py)
            env = with_secret_files(os.environ if environ is None else environ)
        except SecretFileError as exc:
            raise SettingsError(str(exc)) from None
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = _coerce(f.type, raw)
            except ValueError as exc:
                raise SettingsError(f"{f.name.upper()}={shown(f.name, raw)}: {exc}") from None
            problem = _problem(f.name, f.type, values[f.name])
            if problem:  # named with the text as written, not as parsed
                raise SettingsError(f"{f.name.upper()}={shown(f.name, raw)}: {problem}")
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
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
    if name == "float":
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return raw


def _problem(name: str, type_name: Any, value: Any) -> str | None:
    check = _CHECKS.get(name)
    return _type_problem(type_name, value) or (check(value) if check else None)


def _type_problem(type_name: Any, value: Any) -> str | None:
    name = type_name if isinstance(type_name, str) else type_name.__name__
    if name == "bool" and not isinstance(value, bool):
        return "expected true or false"
    if name == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected a whole number"
    if name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
    if name == "str" and not isinstance(value, str):
        return "expected text"
    return None


def _at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def _between(low: float, high: float, *, open_low: bool = True, open_high: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok_low = v > low if open_low else v >= low
        ok_high = v < high if open_high else v <= high
        if ok_low and ok_high:
            return None
        return f"must be {'>' if open_low else '≥'} {low:g} and {'<' if open_high else '≤'} {high:g}"

    return check


def _is_hex_key(v: str) -> bool:
    return v == "" or (len(v) >= 32 and len(v) % 2 == 0 and set(v.lower()) <= set("0123456789abcdef"))


def _secret_url(*schemes: str) -> Callable[[Any], str | None]:
    # The scheme, then no example password of .env.example (docs/security.md).
    scheme = _url(*schemes)
    return lambda v: scheme(v) or example_secret_problem(v)


def _model_list_problem(v: str) -> str | None:
    # Hub names only (`org/name`); local models are allowed by folder, through BASE_MODELS_ROOT.
    for entry in (e.strip() for e in v.split(",") if e.strip()):
        if ".." in entry or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", entry):
            return f"{entry!r} is not a hub name (org/name)"
    return None


def _weakened_concern(url: str) -> str | None:
    """The trainer writes with w=majority, journaled, and reads decisions with majority read concern
    (docs/consistency.md): a URL that asks for less is refused rather than silently weakened."""
    options = {k.lower(): v[-1].lower() for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}
    if options.get("w", "majority") != "majority":
        return f"w={options['w']} weakens the trainer's majority writes (omit w, or w=majority)"
    if options.get("journal", "true") != "true":
        return "journal=false weakens the trainer's journaled writes (omit journal)"
    level = options.get("readconcernlevel", "majority")
    if level not in {"majority", "linearizable"}:
        return f"readConcernLevel={level} weakens the trainer's majority reads (omit it)"
    return None


def _url(*schemes: str) -> Callable[[Any], str | None]:
    return lambda v: None if v.startswith(schemes) else f"must start with {' or '.join(schemes)}"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "mongodb_url": lambda v: _secret_url("mongodb://", "mongodb+srv://")(v) or _weakened_concern(v),
    "mongodb_db": lambda v: None if v and not set(v) & set('/\\. "$') else "must be a database name",
    "celery_broker_url": _secret_url("redis://", "rediss://", "amqp://", "sentinel://"),
    "celery_result_backend": _secret_url("redis://", "rediss://", "rpc://", "db+"),
    "models_dir": lambda v: None if v else "must name a folder",
    "base_model_name": lambda v: None if v else "must name a model",
    "base_model_revision": lambda v: None if v == "" or re.fullmatch(r"[\w.-]{1,100}", v) else "must be a hub revision",
    "allowed_base_models": lambda v: _model_list_problem(v),
    "base_models_root": lambda v: None if v == "" or v.startswith("/") else "must be an absolute path or empty",
    "max_reactions_per_user_per_day": _at_least(0),
    "models_gid": _at_least(-1),
    "num_epochs": _at_least(1),
    "batch_size": _at_least(1),
    "learning_rate": _between(0, 1),
    "head_learning_rate": _between(0, 1),
    "max_length": _between(8, 8192, open_low=False, open_high=False),
    "train_precision": lambda v: None if v in {"auto", "fp32", "bf16", "fp16"} else "must be auto, fp32, bf16 or fp16",
    "seed": _at_least(0),
    "min_feedback": _at_least(2),
    "test_fraction": _between(0.05, 0.5, open_low=False, open_high=False),
    "max_text_chars": _at_least(1),
    "eval_batch_size": _at_least(1),
    "task_time_limit": _at_least(30),
    "job_heartbeat_seconds": _between(0.1, 600, open_low=False, open_high=False),
    "worker_gpu": lambda v: None if v == "" or v.isdigit() else "must be a GPU index (digits) or empty",
    "torch_threads": _at_least(0),
    "worker_soft_shutdown_seconds": _at_least(0),
    "min_improvement": _between(0, 1, open_low=False),
    "gate_confidence": _between(0.5, 1),
    "gate_bootstrap_samples": _at_least(100),
    "min_heldout_pairs": _at_least(4),
    "min_heldout_queries": _at_least(2),
    "gate_max_regression": _between(0, 1, open_low=False),
    "split_key": lambda v: None if _is_hex_key(v) else "must be empty or an even number (32 or more) of hex digits",
    "slice_field": lambda v: None if not set(v) & set("$.\0") else "must be empty or a plain field name",
    "gate_slice_min_pairs": _at_least(10),
    "train_min_feedback": _at_least(2),
    "train_min_minority": _between(0, 0.5, open_low=False, open_high=False),
    "train_new_feedback": _at_least(1),
    "train_cooldown_seconds": _at_least(0),
    "auto_retry_limit": _at_least(0),
    "producer_lease_seconds": _between(1, 3600, open_low=False, open_high=False),
    "job_resend_after_seconds": _at_least(1),
    "job_max_resends": _at_least(0),
    "job_max_handbacks": _at_least(1),
    "online_refresh_seconds": _at_least(1),
    "online_guard_min_feedback": _at_least(10),
    "online_guard_confidence": _between(0.5, 1),
    "metrics_port": _between(0, 65535, open_low=False, open_high=False),
    "metrics_refresh_seconds": _between(0.5, 3600, open_low=False, open_high=False),
    "train_max_pairs": lambda v: None if v == 0 or v >= 100 else "must be 0 (no cap) or at least 100",
    "gate_max_pairs": lambda v: None if v == 0 or v >= 100 else "must be 0 (no cap) or at least 100",
    "retain_champions": _at_least(2),
    "retain_versions": _at_least(1),
    "retain_days": _at_least(0),
    "job_retention_days": _at_least(1),
}


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
