"""`app` for gunicorn: ``gunicorn --workers 1 --threads 8 --timeout 0 backend.wsgi:app`` (settings from the environment).

Settings, folders or a database that cannot be used end the process with one line on stderr and exit
status 4, gunicorn's "app failed to load", on which its master stops (with or without --preload).
"""

from __future__ import annotations

import sys

from flask import Flask

from backend.app import create_app
from backend.db.session import DatabaseSetupError
from backend.logs import configure_logging
from backend.settings import Settings, SettingsError

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR


def _load() -> Flask:
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        return create_app(settings)
    except (SettingsError, DatabaseSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(APP_LOAD_ERROR) from None


app = _load()
