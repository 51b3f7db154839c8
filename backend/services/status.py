"""What the status page shows: serving versions, every version's gate figures, jobs with progress, acceptance.

`status_view` reads it all in one session (the newest JOBS_SHOWN jobs, counts of the others);
`job_fraction` turns a job's progress record into 0..1 for a progress bar; `acceptance_svg` draws
kept / moved / deleted / added shares as stacked bars (inline SVG, no JavaScript, no files).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from backend.db import versions as db_versions
from backend.db.jobs import list_jobs
from backend.db.metrics import acceptance_metrics
from backend.db.session import session_scope
from backend.db.tables import FINISHED_JOB_STATES, Job, ModelVersion
from backend.services.prediction import serving_model

if TYPE_CHECKING:
    from backend.context import BackendContext

JOBS_SHOWN = 50
KINDS = ("kept", "moved", "deleted", "added")
# Kept green, moved amber, deleted red, added blue: the usual traffic-light reading.
KIND_COLOURS = {"kept": "#2e7d32", "moved": "#f9a825", "deleted": "#c62828", "added": "#1565c0"}


@dataclass
class VersionRow:
    """One model version as the page lists it."""

    name: str
    project_id: int | None
    state: str
    backbone: str
    created_at: str
    holdout_map: float | None = None
    serving_map: float | None = None
    delta_map: float | None = None
    margin: float | None = None
    promote: bool | None = None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    has_curve: bool = False


@dataclass
class StatusView:
    """Everything the status page renders."""

    serving: dict[str, str]  # scope ("global" or "project N") -> serving version name
    versions: list[VersionRow]
    jobs: list[dict[str, Any]]
    job_counts: dict[str, int]
    acceptance: dict[str, Any]


def job_fraction(kind: str, state: str, progress: dict[str, Any] | None) -> float:
    """A job's progress in 0..1 from its progress record (training: cache 0-10 %, epochs 10-90 %, gate)."""
    if state in FINISHED_JOB_STATES:
        return 1.0
    p = progress or {}

    def share(done: Any, total: Any) -> float:
        ok = isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0
        return min(max(float(done) / float(total), 0.0), 1.0) if ok else 0.0

    if kind == "preannotate":
        return share(p.get("tasks_done"), p.get("tasks_total"))
    phase = p.get("phase")
    if phase == "cache":
        return 0.1 * share(p.get("done"), p.get("total"))
    if phase == "train":
        epochs, steps = p.get("epochs") or 0, p.get("steps_per_epoch") or 0
        epoch, step = max((p.get("epoch") or 1) - 1, 0), p.get("step") or 0
        return 0.1 + 0.8 * share(epoch * steps + step, epochs * steps)
    return {"write": 0.9, "gate": 0.93, "done": 1.0}.get(str(phase), 0.0)


def _job(job: Job) -> dict[str, Any]:
    progress = job.progress or {}
    detail = ", ".join(f"{k} {progress[k]}" for k in ("phase", "epoch", "epochs", "version", "outcome", "tasks_done",
                                                       "tasks_total") if progress.get(k) is not None)  # fmt: skip
    return {"id": job.id, "project_id": job.project_id, "kind": job.kind, "state": job.state,
            "trigger": job.trigger, "detail": detail, "error": (job.error or "").splitlines()[0][:200] if job.error
            else "", "fraction": job_fraction(job.kind, job.state, progress),
            "created_at": job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else ""}  # fmt: skip


def _version_row(v: ModelVersion, curve_exists: bool) -> VersionRow:
    gate = (v.metrics or {}).get("gate") or {}
    summary = {k: v.training_summary.get(k) for k in ("videos", "labelled_frames", "persons", "annotations")
               if (v.training_summary or {}).get(k) is not None}  # fmt: skip
    return VersionRow(
        name=v.name, project_id=v.project_id, state=v.state, backbone=v.backbone,
        created_at=v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else "",
        holdout_map=(gate.get("candidate") or {}).get("map"), serving_map=(gate.get("serving") or {}).get("map"),
        delta_map=gate.get("delta_map"), margin=gate.get("margin"), promote=gate.get("promote"),
        reason=str(gate.get("reason") or ""), data=summary, has_curve=curve_exists,
    )  # fmt: skip


def status_view(ctx: BackendContext, project_id: int | None = None) -> StatusView:
    """Reads the page's data (one session for the database, then the serving model names)."""
    from backend.services.version_files import version_files

    with session_scope(ctx.sessions) as session:
        rows = db_versions.list_versions(session=session, project_id=project_id)
        versions = [_version_row(v, version_files(ctx.settings.model_dir, v.name)["curve"].is_file())
                    for v in reversed(rows)]  # fmt: skip
        jobs = [_job(j) for j in list_jobs(session=session, project_id=project_id, limit=JOBS_SHOWN)]
        stmt = select(Job.state, func.count()).group_by(Job.state)
        if project_id is not None:
            stmt = stmt.where(Job.project_id == project_id)
        counts = {str(state): int(n) for state, n in session.execute(stmt)}
        acceptance = acceptance_metrics(session=session, project_id=project_id)
    serving = {"global": serving_model(ctx, None).name}
    projects = {project_id} if project_id is not None else {r.project_id for r in versions}
    for pid in sorted(p for p in projects if p is not None):
        serving[f"project {pid}"] = serving_model(ctx, pid).name
    return StatusView(serving, versions, jobs, counts, acceptance)


def _bars(rows: list[tuple[str, dict[str, int]]], title: str, width: int = 560) -> str:
    """Stacked horizontal bars of kept/moved/deleted/added shares, one row per label."""
    label_w, bar_w, row_h, top = 150, width - 150 - 60, 22, 34
    height = top + row_h * max(len(rows), 1) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="12">',
           f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>']  # fmt: skip
    x = label_w
    for kind in KINDS:  # legend
        out.append(f'<rect x="{x}" y="20" width="10" height="10" fill="{KIND_COLOURS[kind]}"/>'
                   f'<text x="{x + 14}" y="29">{kind}</text>')  # fmt: skip
        x += 80
    if not rows:
        out.append(f'<text x="0" y="{top + 14}" fill="#666">no corrections yet</text>')
    for i, (label, counts) in enumerate(rows):
        y = top + i * row_h
        total = sum(counts.get(k, 0) for k in KINDS)
        out.append(f'<text x="0" y="{y + 14}">{html.escape(label)}</text>')
        left = float(label_w)
        for kind in KINDS:
            n = counts.get(kind, 0)
            w = bar_w * n / total if total else 0.0
            if w > 0:
                out.append(f'<rect x="{left:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                           f'fill="{KIND_COLOURS[kind]}"><title>{kind}: {n} of {total}</title></rect>')  # fmt: skip
            left += w
        out.append(f'<text x="{label_w + bar_w + 6}" y="{y + 14}" fill="#444">n={total}</text>')
    out.append("</svg>")
    return "".join(out)


def acceptance_svg(acceptance: dict[str, Any]) -> tuple[str, str]:
    """(per-version chart, per-joint chart of the version with the most corrections) as inline SVG."""
    versions = acceptance.get("model_versions") or {}
    per_version = [(name, v["overall"]) for name, v in versions.items()]
    busiest = max(versions, key=lambda n: sum(versions[n]["overall"].get(k, 0) for k in KINDS), default=None)
    joints = list((versions[busiest]["joints"] if busiest else {}).items())
    return (_bars(per_version, "Acceptance per model version"),
            _bars(joints, f"Acceptance per joint ({busiest or 'no version'})"))  # fmt: skip
