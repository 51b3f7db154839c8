"""An in-process queue for SQLite's one write lock, with webhook intake ahead of background work.

SQLite lets one transaction write at a time; `backend.db.session` takes that lock at BEGIN
(IMMEDIATE). Left to SQLite, a thread that finds the lock taken polls it from its busy handler,
sleeping up to 100 ms between tries, so the lock sits idle while webhooks wait and the waiters
are served in no particular order. `WriteLock` queues this process's writers instead: a thread
takes it before BEGIN and gives it back after COMMIT or ROLLBACK, and the next waiter is woken at
once, first come first served. Transactions begun inside `background_writes()` (webhook event
processing) go after every other waiting writer, but yield for at most `MAX_DEFER_S`: then they go
next, so that processing keeps going under a steady stream of webhooks. Other processes (an RQ worker, a
CLI command) still meet this one on SQLite's busy timeout, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MAX_DEFER_S = 0.2  # a background transaction waits at most this long for foreground writers to pass

_local = threading.local()


@contextmanager
def background_writes() -> Iterator[None]:
    """Transactions this thread begins meanwhile let other waiting writers of the process go first."""
    previous = getattr(_local, "background", False)
    _local.background = True
    try:
        yield
    finally:
        _local.background = previous


class WriteLock:
    """Hands SQLite's write lock to this process's transactions in turn (see the module docstring).

    Args:
        timeout_s: how long a writer waits here; past it, it goes on to BEGIN IMMEDIATE and SQLite's
            busy timeout decides, as without this lock.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._holder: int | None = None  # id() of the DBAPI connection in a write transaction
        self._holder_thread: int | None = None
        self._tickets = 0
        self._queue: list[int] = []  # foreground tickets, first come first served
        self._background: dict[int, float] = {}  # background tickets (in order) -> when they began to wait

    def _overdue(self) -> bool:
        """Whether the first background writer has yielded long enough: it goes next."""
        first = next(iter(self._background.values()), None)
        return first is not None and time.monotonic() - first >= MAX_DEFER_S

    def _turn(self, ticket: int, background: bool) -> bool:
        if self._holder is not None:
            return False
        if background:
            return next(iter(self._background)) == ticket and (not self._queue or self._overdue())
        return self._queue[0] == ticket and not self._overdue()

    def acquire(self, dbapi_connection: Any) -> bool:
        """Waits for the lock; returns whether it was taken (False: timed out or re-entered)."""
        me = threading.get_ident()
        background = getattr(_local, "background", False)
        with self._cond:
            if self._holder_thread == me:  # a second transaction of this thread: SQLite decides, as before
                return False
            self._tickets += 1
            ticket, start = self._tickets, time.monotonic()
            if background:
                self._background[ticket] = start
            else:
                self._queue.append(ticket)
            try:
                while not self._turn(ticket, background):
                    waited = time.monotonic() - start
                    if waited >= self.timeout_s:
                        return False
                    # A background writer wakes when its deferral runs out, whoever holds the lock then.
                    wait = min(self.timeout_s - waited, max(MAX_DEFER_S - waited, 0.001)) if background else \
                        self.timeout_s - waited  # fmt: skip
                    self._cond.wait(wait)
            finally:
                if background:
                    del self._background[ticket]
                else:
                    self._queue.remove(ticket)
                self._cond.notify_all()  # the queues changed: the next in line may go now
            self._holder, self._holder_thread = id(dbapi_connection), me
            return True

    def release(self, dbapi_connection: Any) -> None:
        """Gives the lock back if `dbapi_connection` holds it (after its COMMIT, ROLLBACK or close)."""
        with self._cond:
            if self._holder is not None and self._holder == id(dbapi_connection):
                self._holder = self._holder_thread = None
                self._cond.notify_all()


def install(engine: Any, lock: WriteLock) -> None:
    """Makes the engine's dialect give `lock` back after every commit, rollback and close.

    The engine's "commit"/"rollback" events fire before the statement runs; releasing there would
    send the next writer into SQLite's busy handler. The dialect's methods run it."""
    dialect = engine.dialect
    for name in ("do_commit", "do_rollback", "do_close", "do_terminate"):
        original = getattr(dialect, name)

        def wrapped(connection: Any, _original: Any = original) -> None:
            try:
                _original(connection)
            finally:
                lock.release(getattr(connection, "dbapi_connection", connection))

        setattr(dialect, name, wrapped)
