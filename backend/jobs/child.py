"""Running a job in a child process, so that the memory it held goes back to the OS when it ends.

A training run holds a backbone, a head, heatmap caches and optimizer state (GBs on real data); run
in a server thread, the allocator keeps most of it after the job ends. `run_item` (what the worker
threads and the RQ worker execute) sends the jobs whose function is in `registry.CHILD_FUNCTIONS` to
`run_in_child`; everything else runs in the calling thread (`backend.jobs.execution.run_item`).

`run_in_child` starts a process with multiprocessing's "spawn" context (a fresh interpreter: no
inherited threads, locks, DB connections or CUDA state), which builds its own BackendContext from
the same Settings (DEVICE included) and predictor factory and runs `execute_job` there: state,
progress and result go to the job's row as before, stamped with the child's pid. The calling thread
waits for it (the lane stays busy, as with an in-process job) and relays the calls the job queues
(the Label Studio sync after training) to this process's runner. When the child dies without
finishing the job (kill -9, the OOM killer, a segfault), the job is marked failed with the way it
ended; nothing was registered or promoted (see `backend.services.finetune`). The child exits as soon
as its parent does (a thread waits on the parent's sentinel), so a killed server leaves no training
behind, and the next start-up marks the job failed (`fail_stale_jobs`: its pid is gone).

Cancellation (``POST /jobs/<id>/cancel``) reaches the child through the job's row, as its progress
leaves through it: the child's `ProgressReporter` reads the cancel request at its next stored report
and ends the job "cancelled"; a training run stops taking requests once it starts registering its
version (`ProgressReporter.commit_to_finish`), so none is half-registered. A job cancelled while queued
gets no child at all. Killing the child also stops a job, which then ends failed.

The predictor factory must be picklable (a module-level function or a picklable object; the default
`backend.predictor_cache.default_factory` is).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

from backend.context import BackendContext, build_context
from backend.db import jobs as db_jobs
from backend.db.queries import ConflictError, NotFoundError
from backend.db.session import session_scope
from backend.db.tables import ACTIVE_JOB_STATES, JobKind
from backend.jobs import execution
from backend.jobs.registry import JobQueueError, runs_in_child
from backend.logs import configure_logging
from backend.predictor_cache import PredictorFactory
from backend.settings import Settings

logger = logging.getLogger(__name__)

EXIT_PARENT_GONE = 3  # the child's exit status when it ends because its parent died


def run_item(ctx: BackendContext, item: execution.Item) -> None:
    """Runs a queued job or call: in a child process for `registry.CHILD_FUNCTIONS`, else here."""
    kind, fn_name, job_id, params = item
    if kind == "job" and job_id is not None and runs_in_child(fn_name):
        run_in_child(ctx, job_id, fn_name, params)
    else:
        execution.run_item(ctx, item)


def run_in_child(ctx: BackendContext, job_id: str, fn_name: str, params: Mapping[str, Any]) -> None:
    """Runs a queued job in a spawned child process and waits for it (see the module docstring)."""
    if not execution.is_queued(ctx, job_id):  # cancelled while queued: no process is started for it
        logger.info("job %s (%s) not run: no longer queued", job_id, fn_name)
        return
    spawn = multiprocessing.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(target=child_main, name=f"dcpose-job-{job_id[:8]}", daemon=True,
                            args=(ctx.settings, ctx.predictors.factory, job_id, fn_name, dict(params), sender))  # fmt: skip
    try:
        process.start()
    except Exception as exc:  # pickling the factory or settings, or fork/exec itself: the job fails, with why
        sender.close()
        receiver.close()
        _fail(ctx, job_id, f"the job process could not be started: {type(exc).__name__}: {exc}")
        return
    finally:
        sender.close()  # the child holds its own end: EOF here once it is gone
    logger.info("job %s (%s) runs in process %s", job_id, fn_name, process.pid)
    try:
        _relay(ctx, receiver, process)
    finally:
        receiver.close()
        process.join()
    _fail(ctx, job_id, f"the job process {process.pid} {_ending(process.exitcode)} before the job finished")


def _relay(ctx: BackendContext, receiver: Connection, process: multiprocessing.process.BaseProcess) -> None:
    """Queues, on this process's runner, the calls the child asked for, until the child ends."""
    while True:
        ready = wait([receiver, process.sentinel])
        if receiver not in ready and not receiver.poll():
            return  # the child ended and nothing is left to read
        try:
            function, lane, order_key, params = receiver.recv()
        except EOFError:
            return
        if ctx.runner is None:
            logger.warning("call %s from the job process dropped: this process has no runner", function)
            continue
        try:
            ctx.runner.enqueue(function, lane=lane, order_key=order_key, **params)
        except (JobQueueError, ValueError) as exc:
            logger.warning("call %s from the job process not queued: %s", function, exc)


def _ending(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = " (by hand, or by the kernel's OOM killer)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by signal {name}{hint}"
    if exitcode == EXIT_PARENT_GONE:
        return "stopped because its parent process ended"
    return f"exited with status {exitcode}"


def _fail(ctx: BackendContext, job_id: str, reason: str) -> None:
    """Marks the job failed unless it already finished (as it has when the child ended normally)."""
    try:
        with session_scope(ctx.sessions) as session:
            job = db_jobs.get_job(session=session, job_id=job_id)
            if job is None or job.state not in ACTIVE_JOB_STATES:
                return
            db_jobs.update_job(session=session, job_id=job_id, state="failed", error=reason)
    except (ConflictError, NotFoundError):
        return
    logger.error("job %s failed: %s", job_id, reason)


# ----------------------------------------------------------------------------- in the child


class ForwardingRunner:
    """The child's job runner: the calls a job queues are sent to the parent, which queues them."""

    mode = "child"

    def __init__(self, sender: Connection) -> None:
        self._sender = sender
        self._lock = threading.Lock()

    def submit(self, kind: JobKind, project_id: int, function: str | None = None, *, trigger: str = "api",
               **params: Any) -> str:  # fmt: skip
        raise JobQueueError(f"a job running in a child process cannot queue a {kind} job")

    def enqueue(self, function: str, *, lane: str = "events", order_key: int | None = None, **params: Any) -> None:
        with self._lock:
            try:
                self._sender.send((function, lane, order_key, params))
            except OSError as exc:
                raise JobQueueError(f"the parent process cannot take call {function}: {exc}") from exc

    def start(self) -> None:
        """Nothing to do: the parent started its own runner."""

    def drain(self, timeout: float = 30.0) -> bool:
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Nothing to stop: the calls went to the parent."""

    def after_fork(self) -> None:
        """Nothing to reset."""


def _exit_with_parent() -> None:
    """Ends this process (status EXIT_PARENT_GONE) as soon as the parent process is gone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(EXIT_PARENT_GONE)  # no cleanup: the job's row says running, with this pid, gone

    threading.Thread(target=watch, name="dcpose-parent-watch", daemon=True).start()


def child_main(settings: Settings, factory: PredictorFactory, job_id: str, fn_name: str, params: dict[str, Any],
               sender: Connection) -> None:  # fmt: skip
    """The child process: its own context (same settings and predictors), then `execute_job`."""
    _exit_with_parent()
    configure_logging(settings.log_level)
    ctx = build_context(settings, runner=lambda _ctx: ForwardingRunner(sender), predictor_factory=factory,
                        migrate_db=False)  # fmt: skip
    try:
        execution.execute_job(ctx, job_id, fn_name, params)
    finally:
        ctx.close()
        sender.close()
