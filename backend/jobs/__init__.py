"""Background work: jobs (tracked rows, one active per project and kind) and untracked calls.

Map:
- `registry`: the job kinds (`backend.db.tables.JobKind`) and the functions run in the background, by name.
- `execution`: running one job (state, progress, result; cancelled at a progress report) or call.
- `child`: running a job in a spawned child process (training), so its memory is returned when it ends.
- `runners`: `ThreadRunner` (in-process) and `RQRunner` (Redis), and `runner_factory`.
- `worker`: the RQ worker (`python -m backend worker`).
"""
