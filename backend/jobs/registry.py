"""The job kinds and the registry of background functions, by name.

Functions are named, not passed, so that RQ can find them in its worker: `JOB_FUNCTIONS` maps a
name to "module:function". A job function takes (ctx, *, job_id, report, project_id, **params) and
returns a JSON-able result dict (those in `CHILD_FUNCTIONS` run in a child process); a call function (untracked, e.g. processing a recorded webhook
event) takes (ctx, **params). The job kinds are `backend.db.tables.JobKind` (the database checks
them too); each kind's function is registered under the kind's own name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from backend.db.tables import JobKind

TRAIN: Final[JobKind] = "train"
PREANNOTATE: Final[JobKind] = "preannotate"
CallName = Literal["process_event", "process_events", "sync_ls"]
PROCESS_EVENT: Final[CallName] = "process_event"
PROCESS_EVENTS: Final[CallName] = "process_events"  # a batch: the thread runner merges queued PROCESS_EVENTs
SYNC_LS: Final[CallName] = "sync_ls"

JOB_FUNCTIONS: dict[str, str] = {
    TRAIN: "backend.services.finetune:run_training",
    PREANNOTATE: "backend.services.preannotate:run_preannotate",
    PROCESS_EVENT: "backend.services.event_processing:process_event",
    SYNC_LS: "backend.services.ls_sync:sync_project",
    PROCESS_EVENTS: "backend.services.event_processing:process_events",
}
JobFunction = Callable[..., Mapping[str, Any] | None]
# Jobs whose function runs in a child process (`backend.jobs.child`): what they hold goes back to the OS
# when they end. Keyed by the function, not the name, so that a stand-in registered as "train" runs in-process.
CHILD_FUNCTIONS: frozenset[str] = frozenset({"backend.services.finetune:run_training"})


class JobQueueError(RuntimeError):
    """The job queue (Redis) cannot take the job, or the runner is stopped."""


def runs_in_child(name: str) -> bool:
    """Whether the job registered under `name` runs in a child process (`CHILD_FUNCTIONS`)."""
    return JOB_FUNCTIONS.get(name) in CHILD_FUNCTIONS


def resolve(name: str) -> JobFunction:
    """The function registered under `name`.

    Raises:
        ValueError: no such name.
    """
    target = JOB_FUNCTIONS.get(name)
    if target is None:
        raise ValueError(f"unknown job function {name!r}; registered: {', '.join(sorted(JOB_FUNCTIONS))}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
