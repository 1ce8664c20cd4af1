"""`python -m producer` / `eduranker-producer`: run the feedback watcher until SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal

from eduranker.queue import make_celery
from eduranker.settings import load_or_exit
from eduranker.store import connect
from eduranker.store.connection import CommandCounter
from producer.watcher import Producer


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s producer: %(message)s")
    settings = load_or_exit()
    commands = CommandCounter()
    db = connect(settings, listeners=[commands])
    producer = Producer(settings, db, make_celery(settings, "eduranker-producer"), commands=commands)
    # SIGTERM (docker stop, Ctrl-C) ends the loop after the current evaluation; state is already saved.
    signal.signal(signal.SIGTERM, lambda *_: producer.stop())
    signal.signal(signal.SIGINT, lambda *_: producer.stop())
    producer.run()


if __name__ == "__main__":
    main()
