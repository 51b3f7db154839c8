"""DCPoseBackend: setup / predict / fit in the shape of label-studio-ml's LabelStudioMLBase, thin.

Users of label-studio-ml recognise the class: built per request with the project and its
labelling config, `setup()` (cheap), `predict(tasks, context=None, **kwargs)` returning one
prediction dict per task, `fit(event, data, **kwargs)`. It holds no state between requests: loaded
networks live in `backend.predictor_cache`, everything else in the database. The work is done by
`backend.services.prediction` (predict) and `backend.services.events` (fit). The file is not called model.py: LS
templates do `from model import ...`, which would find this project's `model/` package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annotation_io.label_studio import LabelConfig, parse_config
from backend.db import queries
from backend.db.session import read_session, session_scope
from backend.db.tables import Project
from backend.http.inputs import RequestFormatError, parse_project_id
from backend.limits import check_context, check_tasks
from backend.services import events, ls_sync, prediction

if TYPE_CHECKING:
    from backend.context import BackendContext

logger = logging.getLogger(__name__)


class DCPoseBackend:
    """The ML backend of one Label Studio project, for one request.

    Args:
        project_id: LS project id (None when LS did not say).
        label_config: the project's labelling config XML (None: the stored one).
        context: the service's BackendContext (settings, DB, predictors, job runner).
        **kwargs: other LS fields (hostname, access_token, extra_params) are accepted and unused.
    """

    def __init__(self, project_id: int | None = None, label_config: str | None = None, *,
                 context: BackendContext, **kwargs: Any) -> None:  # fmt: skip
        self.project_id = project_id
        self.label_config = label_config or None
        self.ctx = context
        self.parsed_label_config: LabelConfig | None = None
        self.setup()

    def setup(self) -> None:
        """Cheap (no model load, no network): parses the config when there is one.

        Raises:
            annotation_io.label_studio.ConfigError: a config this backend cannot serve (names what
                is missing).
        """
        if self.label_config is not None:
            self.parsed_label_config = parse_config(self.label_config)

    @property
    def model_version(self) -> str:
        """The serving version name (DB serving version, else the backbone's cold-start version)."""
        return prediction.serving_model(self.ctx, self.project_id).name

    def remember_project(self) -> None:
        """Stores the project row and its config (a few ms; /setup does it), and queues bringing the
        project's model_version in Label Studio in step with the serving version."""
        if self.project_id is None:
            return
        with read_session(self.ctx.sessions) as session:  # usually stored already: no write transaction
            stored = session.get(Project, self.project_id)
            current = (stored is not None, stored.label_config if stored is not None else None)
        if not current[0] or (self.label_config is not None and current[1] != self.label_config):
            with session_scope(self.ctx.sessions) as session:
                queries.upsert_project(session=session, project_id=self.project_id, label_config=self.label_config)
        ls_sync.request_sync(self.ctx, self.project_id)

    def _config(self) -> tuple[LabelConfig, str | None]:
        if self.parsed_label_config is not None:
            return self.parsed_label_config, self.label_config
        stored = None
        if self.project_id is not None:
            with session_scope(self.ctx.sessions) as session:
                project = session.get(Project, self.project_id)
                stored = project.label_config if project is not None else None
        if not stored:
            raise RequestFormatError("no labelling config: send 'label_config' with /predict (LS does) or "
                                     "connect the project through /setup first")  # fmt: skip
        return parse_config(stored), None

    def predict(self, tasks: list[dict[str, Any]], context: Mapping[str, Any] | None = None,
                **kwargs: Any) -> list[dict[str, Any]]:  # fmt: skip
        """One LS prediction dict per task, in order: {"result", "score", "model_version"[, "error"]}.

        Raises:
            RequestFormatError: no tasks list, no project, or no labelling config.
            backend.limits.LimitError: the tasks or the context break a limit (MAX_PREDICT_TASKS, ...).
            AnnotationFormatError | backend.ls.frames.ImageUnavailableError: every task failed.
        """
        if not isinstance(tasks, list) or not tasks:
            raise RequestFormatError("'tasks' must be a non-empty list of Label Studio tasks")
        check_tasks(tasks, self.ctx.settings.limits)
        check_context(context, self.ctx.settings.limits)
        project_id = self.project_id
        if project_id is None:
            first = tasks[0] if isinstance(tasks[0], dict) else {}
            project_id = parse_project_id(first.get("project"))
        if project_id is None:
            raise RequestFormatError(
                "no project: send 'project' (LS sends '<id>.<timestamp>') or task.project"
            )
        config, raw = self._config()
        serving, answers = prediction.predict_tasks(self.ctx, project_id=project_id, config=config, tasks=tasks,
                                                    context=context, label_config=raw)  # fmt: skip
        # LS stores these predictions after this answer: a few tries let it take their version.
        ls_sync.request_sync(self.ctx, project_id, attempts=5)
        return [a.to_ls(serving.name) for a in answers]

    def fit(self, event: str | None, data: Mapping[str, Any], **kwargs: Any) -> tuple[dict[str, Any], int]:
        """Handles a webhook cheaply: records it and queues the work; returns (body, HTTP status).

        Raises:
            backend.services.events.WebhookPayloadError: a payload that cannot be handled.
        """
        payload = dict(data) if isinstance(data, Mapping) else data
        if event is not None and isinstance(payload, dict):
            payload.setdefault("action", event)
        backend_url = kwargs.get("backend_url")
        return events.receive(self.ctx, payload, backend_url=backend_url if isinstance(backend_url, str) else None)
