"""`configure_logging`: the one logging setup, called once by each entry point (`python -m backend`, `backend.wsgi`, scripts)."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Root logging to stderr at `level` (LOG_LEVEL); Alembic's start-up lines only at DEBUG."""
    logging.basicConfig(level=level, format=FORMAT)
    root = logging.getLogger().getEffectiveLevel()
    if root > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat at every start
    # The development server logs every request at INFO and, left alone, sets its own logger to INFO
    # whatever LOG_LEVEL says; above INFO those lines (and their cost per request) are dropped.
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(max(root, logging.INFO))
    if not any(isinstance(f, SecretQueryFilter) for f in werkzeug.filters):
        werkzeug.addFilter(SecretQueryFilter())


# A query parameter whose name says it holds a secret, and its value (up to the next & , space or quote).
_SECRET_QUERY = re.compile(r"([?&](?:[^=&\s\"]*?(?:token|key|secret|passw|pwd|auth|signature|sig)[^=&\s\"]*)=)"
                           r"[^&\s\"]*", re.IGNORECASE)


class SecretQueryFilter(logging.Filter):
    """Masks the values of query parameters named like secrets (`?access_token=...`, `&api_key=...`) in the
    development server's access log, which prints every request line whole: no route takes a secret in the
    query, but a client that sends one would otherwise have it in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _SECRET_QUERY.sub(r"\1***", message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def mask_url_password(url: str | None) -> str | None:
    """`url` with the password of its user-info part replaced by ***."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as given: parts.port raises on a port out of range
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
