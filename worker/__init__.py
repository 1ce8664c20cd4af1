"""The GPU worker: `celery -A worker worker -Q training -c 1`.

Importing this package builds the Celery app, and with it reads the settings from the environment
once (`worker/app.py`, exiting with the reason where they are invalid); it opens no connection, and
torch is imported only inside a job, so the Celery parent process never initialises CUDA.
"""

from worker.app import app

__all__ = ["app"]
