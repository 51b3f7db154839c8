"""Shared test settings: keep matplotlib and other caches inside the test's temp space."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "mpl-dcpose-tests"))
