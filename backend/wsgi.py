"""`app` for gunicorn: ``gunicorn --workers 1 --threads 8 --timeout 0 backend.wsgi:app`` (settings from the environment)."""

from __future__ import annotations

from backend.app import create_app
from backend.logs import configure_logging
from backend.settings import Settings

_settings = Settings.from_env()
configure_logging(_settings.log_level)
app = create_app(_settings)
