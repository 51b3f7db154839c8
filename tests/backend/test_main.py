"""`python -m backend` and gunicorn's `backend.wsgi:app` refuse unusable settings and databases at start-up:
one line naming the setting and the problem, a non-zero exit, no traceback and no password."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pw-s3cret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "PYTHONPATH": str(ROOT)}
    # The timeout only keeps a server that wrongly starts from holding the suite; it measures nothing.
    return subprocess.run(command, cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=120)


def _assert_one_line(proc: subprocess.CompletedProcess[str], status: int, *parts: str) -> None:
    assert proc.returncode == status, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
    for part in parts:
        assert part in proc.stderr


@pytest.mark.parametrize(
    ("env", "status", "parts"),
    [
        ({"DATABASE_URL": f"mysql://app:{SECRET}@db/ml"}, 2, ("DATABASE_URL", "'mysql'")),
        ({"DATABASE_URL": "sqlite://"}, 2, ("DATABASE_URL", "in-memory")),
        ({"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:{{port}}/ml"}, 1,
         ("DATABASE_URL 'postgresql+psycopg://app:***@127.0.0.1:", "Connection refused")),
        ({"DATABASE_URL": "sqlite:///{tmp}"}, 1, ("DATABASE_URL", "is a folder, not a database file")),
        ({"DATABASE_URL": "sqlite:///{tmp}/no/backend.db"}, 1, ("DATABASE_URL", "/no does not exist")),
        ({"DATA_DIR": "{tmp}/file"}, 2, ("DATA_DIR=", "a file is in the way")),
        ({"MODEL_DIR": "{tmp}/file"}, 2, ("MODEL_DIR=", "a file is in the way")),
        ({"MODEL_DIR": "{tmp}/models"}, 2, ("MODEL_DIR=", "a file is in the way of its folder", "models/versions")),
        ({"EVENT_WORKERS": "100000"}, 2, ("EVENT_WORKERS must be at most 32",)),
        ({"DEVICE": "cuda:999"}, 2, ("DEVICE=cuda:999",)),
    ],
)  # fmt: skip
def test_serve_refuses_at_start_up_in_one_line(env: dict[str, str], status: int, parts: tuple[str, ...],
                                               tmp_path: Path) -> None:  # fmt: skip
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "versions").write_text("not a folder")  # where a training run writes its result, last
    env = {k: v.format(tmp=tmp_path, port=_free_port()) for k, v in env.items()}
    proc = _start([sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", "0"], env, tmp_path)
    _assert_one_line(proc, status, *parts)


def test_worker_refuses_a_redis_that_refuses_connections_in_one_line(tmp_path: Path) -> None:
    env = {"REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{_free_port()}/0", "LOG_LEVEL": "WARNING"}
    proc = _start([sys.executable, "-m", "backend", "worker", "--burst"], env, tmp_path)
    _assert_one_line(proc, 1, "REDIS_URL 'redis://:***@127.0.0.1:", "Connection refused")


def test_gunicorn_stops_at_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    """Status 4 is gunicorn's "app failed to load": its master stops instead of booting workers again."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = {"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:{_free_port()}/ml"}
    proc = _start([str(gunicorn), "--preload", "--bind", "127.0.0.1:0", "backend.wsgi:app"], env, tmp_path)
    assert proc.returncode == 4, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and "DATABASE_URL 'postgresql+psycopg://app:***@" in errors[0]
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr
