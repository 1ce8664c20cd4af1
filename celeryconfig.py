"""Celery's configuration module: `app.config_from_object("celeryconfig")`, as the worker does.

Each Celery setting is a module-level lowercase name (`celeryconfig.broker_url`, ...), derived from the
trainer's Settings by `eduranker.celery_settings.from_settings`, where every value carries its reason. The
names are computed on first access from the process's settings (`eduranker.settings.process_settings`, read
from the environment once), so importing this module reads nothing and connects to nothing. Code that holds
its own Settings (the producer, the CLI, tests) calls `from_settings(settings)` directly.
"""

from __future__ import annotations

from typing import Any

from eduranker.celery_settings import TASK_NAME, TRAINING_QUEUE, from_settings
from eduranker.settings import process_settings

__all__ = ["TASK_NAME", "TRAINING_QUEUE", "from_settings"]


def __getattr__(name: str) -> Any:
    """Module attributes for Celery's lowercase names (PEP 562); Celery reads them through `dir()`."""
    if name.islower() and not name.startswith("_"):
        config = from_settings(process_settings())
        if name in config:
            return config[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *from_settings(process_settings())})
