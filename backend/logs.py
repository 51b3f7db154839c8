"""`configure_logging`: the one logging setup, called once by each entry point (`python -m backend`, `backend.wsgi`, scripts)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO") -> None:
    """Root logging to stderr at `level` (LOG_LEVEL); Alembic's start-up lines only at DEBUG."""
    logging.basicConfig(level=level, format=FORMAT)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat at every start
