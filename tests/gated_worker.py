"""A real Celery worker whose jobs meet at a gate: each run, once its snapshot is recorded, says so in
JOB_GATE_DIR and waits until JOB_GATE_PARTIES runs (of any worker) have said so. Two jobs both passing the
gate were, at that moment, both between their claim (`started_at`) and their end (`finished_at`): their
running intervals overlap whatever the machine's speed.

    python -m tests.gated_worker -A worker worker -Q training.a -c 1 ...   (celery's own arguments)

Settings from the environment, as for `celery`. The gate is a wrapper of `Run.progress` installed in the
worker's main process before Celery starts, so every pool child it forks has it; the code under test
has no hook. A run that waits longer than JOB_GATE_TIMEOUT_S goes on alone (and a test then sees no
overlap), and a worker asked to stop leaves the gate at once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from eduranker.store.types import index_of
from worker.run import Run

GATE_STAGE = "evaluate_before"  # the snapshot and split are recorded; the model is not loaded yet
_progress = Run.progress


def _arrive_and_wait(run: Run) -> None:
    gate = Path(os.environ["JOB_GATE_DIR"])
    parties = int(os.environ.get("JOB_GATE_PARTIES", "2"))
    deadline = time.monotonic() + float(os.environ.get("JOB_GATE_TIMEOUT_S", "300"))
    gate.mkdir(parents=True, exist_ok=True)
    (gate / f"{index_of(run.db).name}.{run.job_id}").write_text(str(os.getpid()))
    while len(list(gate.iterdir())) < parties and time.monotonic() < deadline:
        run.check()  # taken over, or the worker is stopping: leave the gate
        time.sleep(0.1)


def gated_progress(self: Run, stage: str, *, force: bool = True, **details: Any) -> None:
    _progress(self, stage, force=force, **details)
    if stage == GATE_STAGE:
        _arrive_and_wait(self)


Run.progress = gated_progress  # type: ignore[method-assign]

if __name__ == "__main__":
    from celery.__main__ import main

    sys.argv = ["celery", *sys.argv[1:]]
    main()
