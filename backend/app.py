"""`create_app(settings)`: the Flask app of the ML backend: Blueprints, basic auth, size limit, error mapping.

Routes live in `backend.http`: the Label Studio protocol (`protocol`: /health /setup /predict
/webhook), background jobs (`jobs`: /preannotate /jobs /metrics), model versions (`versions`:
/versions /train) and the status page (`status`: /). Every error is JSON (`backend.http.errors`).
Basic auth guards every route but `/health` when BASIC_AUTH_USER/BASIC_AUTH_PASS are set.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import Flask, request

from backend.context import BackendContext, build_context
from backend.http import jobs, protocol, status, versions
from backend.http.errors import ApiError, register_error_handlers
from backend.http.inputs import CONTEXT_KEY
from backend.jobs.runners import runner_factory
from backend.predictor_cache import PredictorFactory
from backend.services.training import start_scheduler
from backend.settings import Settings

OPEN_PATHS = frozenset({"/health"})  # Label Studio's health check; the status page `/` needs auth
REALM = 'Basic realm="DCPose ML backend", charset="UTF-8"'
SCHEDULER_KEY = "dcpose_training_scheduler"  # app.extensions[SCHEDULER_KEY]: the training timer, if any


def create_app(settings: Settings | None = None, *, predictor_factory: PredictorFactory | None = None,
               context: BackendContext | None = None, start_runner: bool = True) -> Flask:  # fmt: skip
    """The service's Flask app.

    Args:
        settings: default `Settings.from_env()`.
        predictor_factory: builds predictors (tests inject fast ones); default
            `model.pipeline.predictor.Predictor.create` through `backend.predictor_cache`.
        context: a ready BackendContext (else built from `settings`: DB migrated, runner chosen by
            REDIS_URL).
        start_runner: start the job runner (fails stale jobs, requeues unprocessed events).

    The context is `app.extensions["dcpose"]`; call its `close()` when done. With TRAIN_INTERVAL_S
    > 0 the training timer runs too (`app.extensions[SCHEDULER_KEY]`, stop it with `.stop()`).
    """
    settings = settings or (context.settings if context is not None else Settings.from_env())
    ctx = context or build_context(settings, runner=runner_factory(settings), predictor_factory=predictor_factory)
    if start_runner and ctx.runner is not None:
        ctx.runner.start()
    app = Flask("backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[CONTEXT_KEY] = ctx
    register_error_handlers(app)
    app.before_request(_basic_auth(settings))
    app.before_request(_refuse_nul)
    for module in (protocol, jobs, versions, status):
        app.register_blueprint(module.blueprint)
    scheduler = start_scheduler(ctx)
    if scheduler is not None:
        app.extensions[SCHEDULER_KEY] = scheduler
    return app


def _refuse_nul() -> None:
    """A before-request hook refusing NUL (%00) in the path or the query: job ids, version names and filters are
    compared with text columns, which PostgreSQL refuses it in (a 500 otherwise)."""
    if "\x00" in request.path or any("\x00" in k + v for k, v in request.args.items(multi=True)):
        raise ApiError(400, "the URL path and query must not contain NUL (%00)")


def _basic_auth(settings: Settings) -> Callable[[], None]:
    """A before-request hook refusing requests without the configured basic-auth credentials."""

    def authenticate() -> None:
        expected = settings.basic_auth
        if expected is None or request.path in OPEN_PATHS:
            return
        auth = request.authorization
        basic = auth is not None and auth.type == "basic"
        user = (auth.username or "") if basic else ""
        password = (auth.password or "") if basic else ""
        ok = hmac.compare_digest(user.encode(), expected[0].encode())
        ok &= hmac.compare_digest(password.encode(), expected[1].encode())
        if not ok:
            raise ApiError(401, "authentication required (HTTP basic auth)", headers={"WWW-Authenticate": REALM})

    return authenticate
