"""Real Label Studio for tests: a session fixture that installs label-studio 1.23.2 once and runs it.

Use it by importing the fixture into a test module (every module that does so shares one server)::

    from tests.backend.ls_server import label_studio  # noqa: F401  (pytest fixture)

The install goes into its own venv ($LS_TEST_VENV, default ~/.cache/dcpose-ls/venv-1.23.2), reused
whenever it holds label-studio 1.23.2 (first install 1.5-3 min, ~1 GB). The server runs on
127.0.0.1:<free port> with SQLite in a temporary data folder and an environment for tests
(legacy token enabled, local IPs and SSRF protection off so a local ML
backend can connect, local-files serving from a temporary document root, no Sentry/analytics). It is
stopped (whole process group) at the end of the session. On failure the fixture fails with the tail
of the install or server log. For quick reruns, LS_TEST_SERVER_JSON names a JSON file
(`{"url", "document_root", "data_dir"}`) of a server started beforehand with this module's
`start_label_studio`; it is used as it is and left running.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from backend.ls.client import LabelStudioClient

LS_VERSION = "1.23.2"
USERNAME = "tests@example.com"
PASSWORD = "tests-password-123"
TOKEN = "dcpose-tests-legacy-token-0123456789"  # legacy tokens must be longer than 5 characters
SECRET_KEY = "dcpose-tests-fixed-secret-key-not-for-production"
INSTALL_TIMEOUT_S = float(os.environ.get("LS_TEST_INSTALL_TIMEOUT", "900"))
START_TIMEOUT_S = float(os.environ.get("LS_TEST_START_TIMEOUT", "240"))
LOG_TAIL_CHARS = 4000


@dataclass
class LabelStudioServer:
    """A running Label Studio: where it is, how to log in, where its files live."""

    url: str
    token: str
    username: str
    password: str
    document_root: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    start_s: float = 0.0

    def client(self, **kwargs: object) -> LabelStudioClient:
        """A client authenticated with the legacy token."""
        return LabelStudioClient(self.url, self.token, **kwargs)  # type: ignore[arg-type]

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text[-chars:]


def venv_dir() -> Path:
    """Where the Label Studio venv lives ($LS_TEST_VENV or ~/.cache/dcpose-ls/venv-<version>)."""
    return Path(os.environ.get("LS_TEST_VENV") or Path.home() / ".cache" / "dcpose-ls" / f"venv-{LS_VERSION}")


def _installed_version(exe: Path) -> str | None:
    """The label-studio version installed beside `exe`, or None.

    Not `label-studio --version`: in 1.23.2 that applies migrations to the default data folder
    (~/.local/share/label-studio) and then starts a server on port 8080 instead of exiting.
    """
    python = exe.parent / "python"
    if not exe.exists() or not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('label-studio'))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_label_studio(venv: Path | None = None) -> Path:
    """Path of `label-studio` from a venv holding label-studio==LS_VERSION, installing it if needed.

    A file lock serialises concurrent installs (parallel test sessions). Install output goes to
    `<venv>.install.log`.

    Raises:
        RuntimeError: the install failed; the message holds the tail of the log.
    """
    venv = venv or venv_dir()
    exe = venv / "bin" / "label-studio"
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / f"{venv.name}.install.log"
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = _installed_version(exe)
        if version == LS_VERSION:
            return exe
        started = time.monotonic()
        with open(log_path, "w") as log:
            # The base interpreter, not this project's venv: LS must not see our packages.
            python = getattr(sys, "_base_executable", sys.executable)
            steps = [
                [python, "-m", "venv", "--clear", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", f"label-studio=={LS_VERSION}"],
            ]
            for cmd in steps:
                log.write(f"$ {' '.join(cmd)}\n")
                log.flush()
                try:
                    rc = subprocess.run(
                        cmd, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S
                    ).returncode
                except subprocess.TimeoutExpired:
                    rc = -1
                    log.write(f"\ntimed out after {INSTALL_TIMEOUT_S:.0f} s\n")
                if rc != 0:
                    log.flush()
                    raise RuntimeError(
                        f"installing label-studio=={LS_VERSION} into {venv} failed (exit {rc});"
                        f" log {log_path}:\n{_tail(log_path)}"
                    )
        version = _installed_version(exe)
        if version != LS_VERSION:
            raise RuntimeError(
                f"{venv} holds label-studio {version}, not {LS_VERSION}, after installing; log {log_path}:\n"
                f"{_tail(log_path)}"
            )
        with open(log_path, "a") as log:
            log.write(f"\ninstalled in {time.monotonic() - started:.1f} s\n")
        return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(url: str, data_dir: Path, document_root: Path) -> dict[str, str]:
    """The environment for a non-interactive, offline, test-friendly LS."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=USERNAME,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_ML_BLOCK_LOCAL_IP="false",
        LABEL_STUDIO_SSRF_PROTECTION_ENABLED="false",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_HOST=url,
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LATEST_VERSION_CHECK="false",
        SECRET_KEY=SECRET_KEY,
        DJANGO_DB="sqlite",
    )
    return env


def start_label_studio(exe: Path, data_dir: Path, document_root: Path) -> LabelStudioServer:
    """Starts LS and waits for /health and the legacy token to work.

    Raises:
        RuntimeError: it exited or was not up within START_TIMEOUT_S; the message holds the log tail.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "label-studio.log"
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(url, data_dir, document_root),
            start_new_session=True,
        )
    server = LabelStudioServer(url, TOKEN, USERNAME, PASSWORD, document_root, data_dir, log_path, process)
    headers = {"Authorization": f"Token {TOKEN}"}
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"label-studio exited with {process.returncode} while starting; log {log_path}:\n"
                f"{server.log_tail()}"
            )
        if time.monotonic() - started > START_TIMEOUT_S:
            stop_label_studio(server)
            raise RuntimeError(
                f"label-studio was not up at {url} after {START_TIMEOUT_S:.0f} s; log {log_path}:\n"
                f"{server.log_tail()}"
            )
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                who = requests.get(f"{url}/api/current-user/whoami", headers=headers, timeout=10)
                if who.status_code == 200:
                    break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.start_s = time.monotonic() - started
    return server


def stop_label_studio(server: LabelStudioServer, timeout: float = 15.0) -> None:
    """Terminates the server's whole process group (SIGTERM, then SIGKILL)."""
    process = server.process
    if process.poll() is not None:
        return
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=timeout)


# One server per test process, whichever modules use the fixture: pytest makes a separate session
# fixture for every module that imports it, so those instances share this server (ref-counted).
class _Shared:
    server: LabelStudioServer | None = None
    users = 0


def _reuse(state: str) -> LabelStudioServer:
    """A server already running (a JSON file with its url, document_root and data_dir): for quick reruns."""
    import json

    info = json.loads(Path(state).read_text())
    data_dir = Path(info["data_dir"])
    server = LabelStudioServer(info["url"], TOKEN, USERNAME, PASSWORD, Path(info["document_root"]), data_dir,
                               data_dir / "label-studio.log", subprocess.Popen(["true"]))  # fmt: skip
    server.process.wait()
    return server


def _acquire(tmp_path_factory: pytest.TempPathFactory) -> LabelStudioServer:
    if _Shared.server is None and os.environ.get("LS_TEST_SERVER_JSON"):
        _Shared.server = _reuse(os.environ["LS_TEST_SERVER_JSON"])  # not stopped here: whoever started it does
        _Shared.users += 1
        return _Shared.server
    if _Shared.server is None:
        exe = ensure_label_studio()
        data_dir = tmp_path_factory.mktemp("ls-data")
        document_root = tmp_path_factory.mktemp("ls-docroot")
        _Shared.server = start_label_studio(exe, data_dir, document_root)
    _Shared.users += 1
    return _Shared.server


def _release() -> None:
    _Shared.users -= 1
    if _Shared.users == 0 and _Shared.server is not None and not os.environ.get("LS_TEST_SERVER_JSON"):
        stop_label_studio(_Shared.server)
        _Shared.server = None


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A running Label Studio 1.23.2 for the whole test session (see the module docstring)."""
    try:
        server = _acquire(tmp_path_factory)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        _release()
