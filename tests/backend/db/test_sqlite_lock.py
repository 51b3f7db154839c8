"""Tests of backend.db.sqlite_lock (the in-process queue for SQLite's write lock) and of read_scope."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backend.db import sqlite_lock
from backend.db.session import make_engine, migrate, read_scope, session_factory, session_scope
from backend.db.sqlite_lock import WriteLock, background_writes
from backend.db.tables import Project

JOIN_S = 30  # a guard against a hang, not a time being measured


def queued(lock: WriteLock, count: int) -> None:
    """Blocks until `count` writers wait in the lock (its queues are the state under test)."""
    with lock._cond:
        lock._cond.wait_for(lambda: len(lock._queue) + len(lock._background) >= count, JOIN_S)


def writers(lock: WriteLock, names: list[str], background: set[str], order: list[str]) -> list[threading.Thread]:
    """One thread per name that takes the lock (in `background_writes` for those named) and records when."""

    def write(name: str) -> None:
        connection = object()
        if name in background:
            with background_writes():
                assert lock.acquire(connection)
        else:
            assert lock.acquire(connection)
        order.append(name)
        lock.release(connection)

    threads = []
    for i, name in enumerate(names):
        thread = threading.Thread(target=write, args=(name,))
        thread.start()
        threads.append(thread)
        queued(lock, i + 1)
    return threads


def test_writers_take_the_lock_first_come_first_served() -> None:
    lock, holder, order = WriteLock(timeout_s=JOIN_S), object(), []
    assert lock.acquire(holder)
    threads = writers(lock, ["a", "b", "c", "d"], set(), order)
    lock.release(holder)
    for thread in threads:
        thread.join(JOIN_S)
    assert order == ["a", "b", "c", "d"]


def test_background_writers_go_after_waiting_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_lock, "MAX_DEFER_S", JOIN_S)  # deferral never runs out here
    lock, holder, order = WriteLock(timeout_s=JOIN_S), object(), []
    assert lock.acquire(holder)
    threads = writers(lock, ["processing", "webhook-1", "webhook-2"], {"processing"}, order)
    lock.release(holder)
    for thread in threads:
        thread.join(JOIN_S)
    assert order == ["webhook-1", "webhook-2", "processing"]


def test_a_background_writer_is_not_starved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_DEFER_S a background writer no longer yields to waiting webhooks."""
    monkeypatch.setattr(sqlite_lock, "MAX_DEFER_S", 0.0)
    lock, holder, order = WriteLock(timeout_s=JOIN_S), object(), []
    assert lock.acquire(holder)
    threads = writers(lock, ["processing", "webhook"], {"processing"}, order)
    lock.release(holder)
    for thread in threads:
        thread.join(JOIN_S)
    assert order == ["processing", "webhook"]


def test_a_second_transaction_of_the_holding_thread_does_not_wait_for_itself() -> None:
    lock, first, second = WriteLock(timeout_s=JOIN_S), object(), object()
    assert lock.acquire(first)
    assert lock.acquire(second) is False, "re-entry is left to SQLite's busy timeout, as without the lock"
    lock.release(second)  # not the holder: nothing happens
    with lock._cond:
        assert lock._holder == id(first)
    lock.release(first)
    assert lock.acquire(second)


def test_writers_of_one_engine_queue_and_reads_do_not_wait(tmp_path: Path) -> None:
    """Threads writing through one engine all commit (no "database is locked"); a read_scope reads the
    last commit while a write transaction is open, without waiting for it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    migrate(engine)
    factory = session_factory(engine)
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for i in range(20):
                with session_scope(factory) as session:
                    session.add(Project(id=offset * 100 + i, title="t"))
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S)
    assert not errors, errors
    seen: list[int] = []
    with session_scope(factory) as session:  # holds the write lock until the block ends
        session.add(Project(id=1, title="uncommitted"))
        session.flush()
        reader = threading.Thread(target=lambda: seen.append(_count(engine)))
        reader.start()
        reader.join(JOIN_S)
        assert seen == [100], "the reader finished while the writer held the lock, and saw the last commit"
    assert _count(engine) == 101
    engine.dispose()


def _count(engine: object) -> int:
    with read_scope(engine) as conn:  # type: ignore[arg-type]
        return int(conn.scalar(select(func.count()).select_from(Project)))
