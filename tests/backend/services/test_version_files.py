"""Tests of backend.services.version_files: atomic JSON, version names and temporaries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from annotation_io.jsonio import finite_json
from backend.db import versions
from backend.services.version_files import (
    next_version_name,
    remove_stale_temporaries,
    version_files,
    write_json_atomic,
)


def test_json_is_written_atomically_without_nan(tmp_path: Path) -> None:
    path = tmp_path / "v" / "metrics.json"
    write_json_atomic(path, finite_json({"a": [1.0, math.nan], "b": {"c": math.inf}}))
    assert json.loads(path.read_text()) == {"a": [1.0, None], "b": {"c": None}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"], "no temporary file is left"
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": math.nan})
    assert json.loads(path.read_text())["a"] == [1.0, None], "a failed write leaves the old file"


def test_version_names_skip_taken_names_and_folders(db_session: Session, tmp_path: Path) -> None:
    assert next_version_name(db_session, tmp_path, 1) == "p1-v1"
    for name, project in (("p1-v1", 1), ("p1-v3", 1), ("p2-v7", 2), ("p1-vx", 1)):
        versions.create_model_version(session=db_session, name=name, backbone="b", project_id=project)
    version_files(tmp_path, "p1-v4")["dir"].mkdir(
        parents=True
    )  # left by a run killed after writing its files
    assert next_version_name(db_session, tmp_path, 1) == "p1-v5"
    assert next_version_name(db_session, tmp_path, 2) == "p2-v8"
    root = tmp_path / "versions"
    (root / ".tmp-deadjob").mkdir()
    (root / ".tmp-livejob").mkdir()
    assert remove_stale_temporaries(tmp_path, {"livejob"}) == 1
    assert sorted(p.name for p in root.iterdir()) == [".tmp-livejob", "p1-v4"]
