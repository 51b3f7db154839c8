"""Label Studio ML backend service; the only layer that knows Label Studio, Flask and SQLAlchemy.

Map of the package (layers top to bottom; a module imports only from layers below it):
- `__main__`: `python -m backend [serve|worker|preannotate|import-video|import-posetrack]`.
- `wsgi`: `app` for gunicorn (`gunicorn backend.wsgi:app`).
- `app`: `create_app(settings)`: registers the Blueprints, basic auth, size limit, error mapping, timer.
- `http/`: Flask Blueprints only: LS protocol routes, job routes, version/training routes, the status
  page (`status`, template in `http/templates/`), errors.
- `services/`: the work, no Flask: prediction, webhook events (intake in `events`, batch processing
  in `event_processing`), training (submit / trigger /
  schedule / promote / readiness), fine-tuning, the promotion gate, bulk pre-annotation, training
  data, corrections, `ls_sync` (Label Studio's project model_version and ML-card notes through its
  REST API), `status` (the status page's data and SVG charts).
- `jobs/`: background work: the job registry, job execution, training in a child process, runners
  (threads, RQ), the RQ worker.
- `context`: BackendContext (settings, DB sessions, predictor cache, frames, job runner) and build_context.
- `predictor_cache`: loaded Predictors by (backbone, weights, head, device); thread-safe leases.
- `ls/`: Label Studio: the REST client, task frames with a download cache, the import commands.
- `db/`: SQLAlchemy 2 tables, sessions (SQLite writers queue in-process), Alembic migrations, and every
  database read and write.
- `settings`: `Settings.from_env()`, the only reader of environment variables.
- `limits`: input limits (ids, JSON depth, finite numbers, frames, persons, keypoints, coordinates)
  and their checks, run at intake by `http/` and `services/events`.
- `logs`: `configure_logging`, called once per entry point.
"""
