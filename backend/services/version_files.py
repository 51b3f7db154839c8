"""A model version's folder: MODEL_DIR/versions/<name>/ with head.pt, config.json, training_data.json,
metrics.json and curve.png; its name ("p<project>-v<n>"); written all or nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotation_io.jsonio import atomic_open, finite_json
from backend.context import VERSIONS_DIR  # created and checked at start-up, with MODEL_DIR
from backend.db.tables import ModelVersion

HEAD_FILE = "head.pt"
CURVE_FILE = "curve.png"
METRICS_FILE = "metrics.json"


def versions_dir(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / VERSIONS_DIR


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON written to a temporary file in the same folder, fsynced, then moved over `path`."""
    with atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False)


def next_version_name(session: Session, model_dir: Path, project_id: int) -> str:
    """ "p<project>-v<n>": n one past the highest of the project's names, skipping names taken on disk."""
    pattern = re.compile(rf"p{project_id}-v(\d+)")
    names = session.scalars(select(ModelVersion.name).where(ModelVersion.name.like(f"p{project_id}-v%")))
    n = 1 + max((int(m.group(1)) for m in map(pattern.fullmatch, names) if m), default=0)
    while (versions_dir(model_dir) / f"p{project_id}-v{n}").exists():  # left by a run killed after writing
        n += 1
    return f"p{project_id}-v{n}"


def version_files(model_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Paths of a version's files."""
    folder = versions_dir(model_dir) / name
    return {"dir": folder, "head": folder / HEAD_FILE, "config": folder / "config.json",
            "training_data": folder / "training_data.json", "metrics": folder / METRICS_FILE,
            "curve": folder / CURVE_FILE}  # fmt: skip


def remove_stale_temporaries(model_dir: str | os.PathLike[str], active_jobs: set[str]) -> int:
    """Deletes version folders half-written by jobs that are no longer active; returns how many."""
    root = versions_dir(model_dir)
    removed = 0
    for tmp in root.glob(".tmp-*") if root.is_dir() else []:
        if tmp.name.removeprefix(".tmp-") not in active_jobs:
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


def write_version(folder: Path, tmp: Path, head: Any, backbone: Any, name: str, result: Any,
                  documents: Mapping[str, Any]) -> None:  # fmt: skip
    """Writes every file of a version into `tmp`, then renames it to `folder` (all or nothing)."""
    from model.checkpoint import save_checkpoint
    from model.training.curve import save_training_curve

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model_config = {"backbone": backbone.name, "num_joints": int(head.num_joints),
                        "dilations": list(head.pose_correction.dilations), "head": "dcpose"}  # fmt: skip
        save_checkpoint(tmp / HEAD_FILE, head, model_config=model_config, version=name,
                        extra={"backbone_version": backbone.version, "best_epoch": result.best_epoch})  # fmt: skip
        for file_name, doc in documents.items():
            write_json_atomic(tmp / file_name, finite_json(doc))
        save_training_curve(result, tmp / CURVE_FILE, title=f"{name}: DCPose head on {backbone.name}")
        os.rename(tmp, folder)  # atomic: the version folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
