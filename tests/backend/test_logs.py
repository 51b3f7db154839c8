"""backend.logs: the access log of the development server never prints a secret sent in a query string."""

from __future__ import annotations

import logging
import threading
import urllib.request

import pytest
from flask import Flask
from werkzeug.serving import make_server

from backend.logs import configure_logging


def test_secret_query_values_are_masked_in_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    """Werkzeug logs every request line whole; a client sending ?access_token=... had it in the log."""
    configure_logging("INFO")
    app = Flask(__name__)
    app.add_url_rule("/health", "health", lambda: "ok")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            query = "access_token=tok-SECRET-1&project=3&api_key=KEY-SECRET-2&Password=pw-SECRET-3&sig=SIG-SECRET-4"
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health?{query}") as resp:
                assert resp.read() == b"ok"
            for _ in range(50):  # the line is logged after the answer is sent
                if "GET /health" in caplog.text:
                    break
                threading.Event().wait(0.02)
    finally:
        server.shutdown()
    assert "GET /health?access_token=***&project=3&api_key=***&Password=***&sig=***" in caplog.text, caplog.text
    assert "SECRET" not in caplog.text
    configure_logging("INFO")  # called again (each entry point calls it once): still one filter
    assert len(logging.getLogger("werkzeug").filters) == 1
