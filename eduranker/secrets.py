"""Secrets in settings: read from files (`X_FILE`, as the official database images do), never the
example values of `.env.example`, and never shown in a message. Used by `eduranker.settings` only;
imports nothing of the project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Variables that carry a password; each may instead be given as X_FILE, a file holding the value.
SECRET_VARIABLES = ("MONGODB_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
# `.env.example` ships passwords starting with this; a deployment still using one is refused.
EXAMPLE_PREFIX = "change-me"
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@", re.I)


class SecretFileError(ValueError):
    """An X_FILE that cannot be used; the message names the variable."""


def password_of(url: str) -> str | None:
    match = _USERINFO.match(url)
    return match.group("password") if match else None


def redacted(url: str) -> str:
    """The URL with its password shown as `***`."""
    match = _USERINFO.match(url)
    if not match or match.group("password") is None:
        return url
    return f"{match.group('scheme')}{match.group('user')}:***@{url[match.end() :]}"


def example_secret_problem(url: str) -> str | None:
    """A refusal when the URL's password is one of `.env.example`'s placeholders."""
    password = password_of(url) or ""
    if password.lower().startswith(EXAMPLE_PREFIX):
        return "holds the example password of .env.example; set a secret of your own"
    return None


def shown(variable: str, value: object) -> str:
    """How a setting's value may appear in a message: secret-bearing URLs without their password."""
    if variable.upper() in SECRET_VARIABLES and isinstance(value, str):
        return repr(redacted(value))
    return repr(value)


def with_secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with each X_FILE read into X (trailing newline stripped). Both X and X_FILE set,
    or a file that cannot be read, is an error naming the variable."""
    env = dict(environ)
    for name in SECRET_VARIABLES:
        path = env.get(f"{name}_FILE")
        if path is None:
            continue
        if name in env:
            raise SecretFileError(f"{name}_FILE={path!r}: {name} is set too; set one of them")
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().rstrip("\r\n")
        except OSError as exc:
            raise SecretFileError(f"{name}_FILE={path!r}: cannot be read ({exc.strerror})") from None
        if not value:
            raise SecretFileError(f"{name}_FILE={path!r}: the file is empty")
        env[name] = value
    return env
