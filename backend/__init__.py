"""Label Studio ML backend service; the only layer that knows Label Studio, Flask and SQLAlchemy.

Map of the package:
- `__main__`: `python -m backend [serve|worker|preannotate|import-video|import-posetrack]`.
- `wsgi`: `app` for gunicorn (`gunicorn backend.wsgi:app`).
- `settings`: `Settings.from_env()`, the only reader of environment variables.
- `app`: `create_app(settings)`: the LS protocol routes (/health /setup /predict /webhook /versions)
  plus /metrics, /preannotate and /jobs; JSON errors, basic auth, size limit.
- `ls_model`: `DCPoseBackend`, setup/predict/fit in the shape of label-studio-ml's LabelStudioMLBase.
- `prediction`: frame tasks -> frames, stored labels, task regions -> Predictor -> LS results; logged.
- `predictor_cache`: loaded Predictors by (backbone, weights, head, device); thread-safe leases.
- `frames`: task images (LS downloads with auth, local paths), disk cache, FrameReader over a video.
- `events`: webhook intake (validate, record, dedup, queue) and background processing.
- `context`: BackendContext (settings, DB sessions, predictor cache, job runner) and build_context.
- `jobs`: JobRunner (worker threads or RQ on Redis), job execution and progress, the RQ worker.
- `preannotate`: the bulk "preannotate" job pushing predictions into LS.
- `finetune`: the "train" job (samples, head training, version files); `training_data`: the
  human-checked frames gathered from the DB; `gate`: held-out evaluation and promote/reject;
  `versions_api`: /train, /versions/<v>, /versions/<v>/promote, periodic triggers.
- `corrections`: prediction vs final annotation, joint by joint.
- `ls_client`: a small Label Studio REST client over requests.
- `importers`: `import-video` / `import-posetrack` commands.
- `db`: SQLAlchemy 2 tables, sessions, Alembic migrations, queries.
"""
