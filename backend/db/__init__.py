"""The backend's database: SQLAlchemy 2 typed tables, engines/sessions, Alembic migrations, queries.

Map:
- `tables`: ORM classes (Project, VideoRecord, Task, ModelVersion, Prediction, Annotation,
  Correction, Job, WebhookEvent) and the UTC datetime type.
- `session`: `make_engine(url)` (SQLite WAL / PostgreSQL via psycopg 3), `session_factory`,
  `session_scope` (commit/rollback), `read_scope` / `read_session` (read-only, no SQLite write lock),
  `migrate(url_or_engine)` (alembic upgrade head, no alembic.ini), `open_database(url)` (a process's
  engine, migrated, or one `DatabaseSetupError` saying what is wrong), `default_sqlite_url(data_dir)`.
- `queries`: plain functions with a keyword-only `session`: idempotent upserts of projects, videos,
  tasks, predictions and annotations; corrections.
- `persons`: the JSON of the `persons` columns (NaN stored as null).
- `versions`: model versions, the one serving version per project, gate verdicts, rollback targets.
- `jobs`: job rows (create, update, list, cancel, stale ones); `events`: webhook events (dedup, status).
- `event_batches`: the bulk reads and writes of one webhook-processing batch (statements built once).
- `sqlite_lock`: the in-process queue for SQLite's one write lock (webhook intake before processing).
- `metrics`: acceptance statistics of the predictions.
- `migrations/`: Alembic environment and revisions (`versions/0001_initial.py` creates everything).

Typical use::

    engine = make_engine(settings.database_url)
    migrate(engine)
    factory = session_factory(engine)
    with session_scope(factory) as session:
        queries.upsert_project(session=session, project_id=1, title="poses")
"""
