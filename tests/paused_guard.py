"""Run the online guard's refresh, or a whole producer, in this process and stop it with SIGSTOP at its
first write of the live figures (`model_versions.online`): after the guard judged, before it switches.
`challenge`: one look at the running challenge, stopped at its first write of the champion record
(after the producer judged the challenge, before its ending is written).

    python -m tests.paused_guard refresh|producer|challenge

Settings from the environment. The stop is made by a pymongo command listener of this test process's
own client, just before that write is sent; the code under test has no hook. SIGCONT resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from pymongo import monitoring

from eduranker.queue import make_celery
from eduranker.settings import Settings
from eduranker.store import connect
from eduranker.store.connection import CHAMPION_RECORD
from producer.challenge_refresh import refresh_challenge
from producer.online_refresh import refresh_online
from producer.watcher import Producer


class StopAtFiguresWrite(monitoring.CommandListener):
    def __init__(self, collection: str = "model_versions", field: str | None = "online") -> None:
        self.stopped = False
        self.collection, self.field = collection, field

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.stopped or event.command_name != "update" or event.command.get("update") != self.collection:
            return
        updates = event.command.get("updates", [])
        if self.field is None or any(self.field in (u.get("u") or {}).get("$set", {}) for u in updates):
            self.stopped = True
            print("stopping before the figures' write", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def main(mode: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if mode == "challenge":
        db = connect(settings, listeners=[StopAtFiguresWrite(CHAMPION_RECORD, None)])
        looked = refresh_challenge(db, settings)
        print(
            "decision:", looked.decision.reason if looked else None, "applied:", looked and looked.applied, flush=True
        )
        return 0
    db = connect(settings, listeners=[StopAtFiguresWrite()])
    if mode == "refresh":
        decision = refresh_online(db, settings)
        print("decision:", decision.reason if decision else None, flush=True)
        return 0
    producer = Producer(settings, db, make_celery(settings, "eduranker-producer"), idle_eval_s=0.5)
    signal.signal(signal.SIGTERM, lambda *_: producer.stop())
    producer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
