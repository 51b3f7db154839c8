"""The status page (a Blueprint): `GET /` renders serving versions, versions, jobs and acceptance as HTML.

Server-rendered (`templates/status.html`), behind the same basic auth as the API (`/health` stays
open for Label Studio). A little plain JavaScript polls `/jobs` to move the progress bars of
running jobs and posts `/versions/<name>/promote` after a confirmation; no build step.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from backend.http.inputs import current_context, query_int
from backend.services.status import acceptance_svg, status_view

blueprint = Blueprint("status", __name__, template_folder="templates")


@blueprint.get("/")
def status_page() -> Any:
    project_id = query_int("project")
    view = status_view(current_context(), project_id)
    by_version, by_joint = acceptance_svg(view.acceptance)
    serving_names = set(view.serving.values())
    return render_template("status.html", view=view, project_id=project_id, by_version=by_version,
                           by_joint=by_joint, serving_names=serving_names)  # fmt: skip
