"""`configure_logging`: the one logging setup, called once by each entry point (`python -m backend`, `backend.wsgi`, scripts)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Root logging to stderr at `level` (LOG_LEVEL); Alembic's start-up lines only at DEBUG."""
    logging.basicConfig(level=level, format=FORMAT)
    root = logging.getLogger().getEffectiveLevel()
    if root > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat at every start
    # The development server logs every request at INFO and, left alone, sets its own logger to INFO
    # whatever LOG_LEVEL says; above INFO those lines (and their cost per request) are dropped.
    logging.getLogger("werkzeug").setLevel(max(root, logging.INFO))
