"""The producer's HTTP endpoint on METRICS_PORT: `/metrics` (Prometheus text, from the cache of
producer/metrics.py), `/healthz` (alive, database reachable) and `/readyz` (doing its job: leading with
the change stream open, or standing by behind a live leader). Every producer process serves it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import Celery
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from eduranker.queue import make_celery
from eduranker.settings import Settings
from eduranker.store import connect
from eduranker.store.connection import CommandCounter
from producer.metrics import MetricsCache

log = logging.getLogger(__name__)


def celery_ping(app: Celery, timeout_s: float = 1.0) -> Callable[[], int | None]:
    """Workers alive: the nodes that answer a broadcast ping (`celery inspect ping`); None when the
    broker cannot be reached (no figure rather than a false zero)."""

    def ping() -> int | None:
        try:
            return len(app.control.ping(timeout=timeout_s) or [])
        except Exception:  # the broker is down: that is its own alert, not "no worker"
            log.warning("could not ping the workers", exc_info=True)
            return None

    return ping


def health(cache: MetricsCache, within_s: float) -> tuple[int, dict[str, Any]]:
    reachable = cache.database_reachable(within_s)
    return (200 if reachable else 503), {"alive": True, "database_reachable": reachable}


def readiness(cache: MetricsCache, within_s: float, watching: Callable[[], bool]) -> tuple[int, dict[str, Any]]:
    """Ready: the database reachable, and this producer leading with its change stream open, or
    standing by behind another producer's live lease."""
    code, body = health(cache, within_s)
    leading, waiting = watching(), cache.standing_by
    body.update(watching=leading, standby=waiting)
    return (200 if code == 200 and (leading or waiting) else 503), body


class Endpoint:
    """The HTTP server and the cache's refresh thread, started and stopped together."""

    def __init__(self, cache: MetricsCache, settings: Settings, *, watching: Callable[[], bool],
                 host: str = "0.0.0.0"):  # fmt: skip
        self.cache, self.settings = cache, settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(cache)
        # Three missed refreshes (and at least 30 s) before the database counts as unreachable.
        self.within_s = max(30.0, 3 * settings.metrics_refresh_seconds)
        self.watching = watching
        self.stop_event = threading.Event()
        self.server = ThreadingHTTPServer((host, settings.metrics_port), self._handler())
        self.server.daemon_threads = True
        self.threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(endpoint.registry))
                elif path in ("/healthz", "/readyz"):
                    code, body = endpoint.check(path)
                    self._send(code, "application/json", json.dumps(body).encode())
                else:
                    self._send(404, "text/plain", b"not found: /metrics, /healthz, /readyz\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass  # scrapes every few seconds would drown the producer's log

        return Handler

    def check(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/healthz":
            return health(self.cache, self.within_s)
        return readiness(self.cache, self.within_s, self.watching)

    def start(self) -> Endpoint:
        for name, target in (("metrics-refresh", lambda: self.cache.run(self.stop_event)),
                             ("metrics-http", self.server.serve_forever)):  # fmt: skip
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("metrics on :%d (/metrics, /healthz, /readyz), refreshed every %.0f s", self.port,
                 self.settings.metrics_refresh_seconds)  # fmt: skip
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def serve(settings: Settings, holder: str, *, watching: Callable[[], bool]) -> Endpoint | None:
    """Start this producer's endpoint, or None with METRICS_PORT=0. Its own client and Celery app: what
    the metrics cost the database is counted apart from the producer's work (and exported)."""
    if settings.metrics_port == 0:
        return None
    commands = CommandCounter()
    db = connect(settings, listeners=[commands])
    workers = celery_ping(make_celery(settings, "eduranker-metrics"))
    cache = MetricsCache(db, settings, holder, commands=commands, workers=workers)
    try:
        return Endpoint(cache, settings, watching=watching).start()
    except OSError as exc:  # the port is taken (a second producer on one host): the producer still works
        log.error("no metrics endpoint: cannot listen on port %d (%s); set METRICS_PORT", settings.metrics_port, exc)
        db.client.close()
        return None
