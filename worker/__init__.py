"""The GPU worker: `celery -A worker worker -Q training -c 1`.

Importing this package builds the Celery app and nothing else: torch is imported only inside a job,
so the Celery parent process never initialises CUDA.
"""

from worker.app import app

__all__ = ["app"]
