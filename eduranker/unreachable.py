"""The one line an entry point prints when MongoDB cannot be reached: the URL (password hidden) and the
first reason the driver gives, without its topology dump."""

from __future__ import annotations

from eduranker.store.connection import redact_url

# pymongo appends its timeouts and a description of every server it knows to the reason: a screenful.
_DRIVER_DETAIL = (" (configured timeouts", ", Timeout:", ", Topology Description:")


def unreachable_line(url: str, exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for marker in _DRIVER_DETAIL:
        reason = reason.split(marker, 1)[0]
    return f"error: cannot reach MongoDB at {redact_url(url)}: {reason}"
