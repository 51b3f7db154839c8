"""Static checks of the deployment files (Dockerfile, .dockerignore, docker/): no Docker engine needed.

Where a check can run something real it does: the Dockerfile's pip steps run under `sh` with a
recording `pip`, its HEALTHCHECK and the compose health checks run against a local HTTP server, its
CMD is parsed by gunicorn's own argument parser, and the compose environment of the backend is fed
to `Settings.from_env`.
"""

from __future__ import annotations

import ast
import http.server
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
SECRET_NAME = re.compile(r"PASS|PASSWORD|TOKEN|API_KEY|SECRET")
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(KeyError):
    """A `${VAR:?message}` whose variable is unset or empty."""


# ----------------------------------------------------------------------------- helpers


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-style `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}` and `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return value or ""

    return _VAR.sub(one, text)


def read_env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; with `commented`, also the `# KEY=VALUE` examples."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if commented and re.match(r"#\s*[A-Z_][A-Z0-9_]*=", line):
            line = line.lstrip("#").strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def _interpolate_tree(node: object, env: Mapping[str, str]) -> object:
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


def compose(env: Mapping[str, str] | None = None) -> dict:
    """The compose file with its values interpolated (after YAML parsing, as compose does) from `env`.

    `env` defaults to docker/.env.example.
    """
    env = read_env_file(ENV_EXAMPLE) if env is None else env
    return _interpolate_tree(yaml.safe_load(COMPOSE.read_text()), env)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, args = (pending + line).strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def docker_vars(overrides: Mapping[str, str] = {}) -> dict[str, str]:
    """Build args (with `overrides`) and ENV values after the FROM line, as a RUN/CMD sees them."""
    values: dict[str, str] = {}
    after_from = False
    for instruction, args in dockerfile():
        after_from |= instruction == "FROM"
        if instruction == "ARG" and after_from:
            name, _, default = args.partition("=")
            values[name] = overrides.get(name, default)
        elif instruction == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                values[name] = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), ""), value)
    return values


def run_script(script: str, env: Mapping[str, str], tmp_path: Path) -> tuple[int, list[str], str]:
    """Runs `script` under sh with recording stand-ins for pip/python; returns (rc, calls, stderr)."""
    fakebin, log = tmp_path / "fakebin", tmp_path / "calls.log"
    fakebin.mkdir(exist_ok=True)
    for tool in ("pip", "python"):
        (fakebin / tool).write_text(
            f'#!/bin/sh\nprintf "{tool}" >> "$LOG"\n'
            'for a in "$@"; do printf " %s" "$a" >> "$LOG"; done\necho >> "$LOG"\n'
        )
        (fakebin / tool).chmod(0o755)
    log.write_text("")
    proc = sh(script, {**env, "PATH": f"{fakebin}:/usr/bin:/bin", "LOG": str(log)})
    return proc.returncode, log.read_text().splitlines(), proc.stderr


def sh(script: str | list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a shell script (or an argv list) and returns its result whatever the exit status."""
    argv = ["sh", "-c", script] if isinstance(script, str) else script
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)


def run_args(instruction_args: str) -> str:
    """A RUN's shell script without its leading --mount/--network flags."""
    while instruction_args.startswith("--"):
        instruction_args = instruction_args.split(None, 1)[1]
    return instruction_args


def requirement_pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{name}==(\S+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"requirements.txt does not pin {name}")


@pytest.fixture()
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local HTTP server whose /health answers state['status']; every other path is 404."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["status"] if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"UP"}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], state
    server.shutdown()
    server.server_close()


def backend_env_names() -> set[str]:
    """Env names the backend reads: string arguments of calls in settings.py plus os.environ reads elsewhere."""
    names: set[str] = set()
    tree = ast.parse((ROOT / "backend" / "settings.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and re.fullmatch(r"[A-Z][A-Z0-9_]+", a.value)}  # fmt: skip
    for path in (ROOT / "backend").rglob("*.py"):
        names |= set(re.findall(r"environ(?:\.get\(|\[)\s*[\"']([A-Z][A-Z0-9_]+)", path.read_text()))
    return names


# ----------------------------------------------------------------------------- compose


def test_compose_services_images_and_profiles() -> None:
    services = compose()["services"]
    assert set(services) == {"label-studio", "ml-backend", "postgres", "redis", "worker"}
    assert services["label-studio"]["image"] == "heartexlabs/label-studio:1.23.2"
    assert services["postgres"]["image"] == "postgres:16"
    build = services["ml-backend"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert (
        services["worker"]["build"] == build
        and services["worker"]["image"] == services["ml-backend"]["image"]
    )
    assert {name for name, s in services.items() if s.get("profiles")} == {"redis", "worker"}
    assert services["redis"]["profiles"] == services["worker"]["profiles"] == ["rq"]


def test_compose_refuses_to_start_without_each_secret() -> None:
    full = read_env_file(ENV_EXAMPLE)
    secrets = {k for k, v in full.items() if SECRET_NAME.search(k) and v}  # empty ones are optional
    assert {"POSTGRES_PASSWORD", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_SECRET_KEY"} <= secrets
    compose(full)  # complete .env: interpolates
    for name in secrets:
        with pytest.raises(MissingVariable, match=name):
            compose({k: v for k, v in full.items() if k != name})


def test_env_example_and_compose_name_the_same_variables() -> None:
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(read_env_file(ENV_EXAMPLE, commented=True))
    assert referenced - documented == set(), "variables used by compose but missing from .env.example"
    assert documented - referenced - {"COMPOSE_PROFILES"} == set(), ".env.example variables compose ignores"
    readme = (ROOT / "docker" / "README.md").read_text()
    assert [name for name in documented if f"`{name}`" not in readme] == [], (
        "undocumented in docker/README.md"
    )


def test_backend_environment_uses_names_the_backend_reads() -> None:
    env = compose()["services"]["ml-backend"]["environment"]
    gunicorn_vars = set(re.findall(r"\$\{?(\w+)", dict(dockerfile())["CMD"]))
    unknown = set(env) - backend_env_names() - gunicorn_vars
    assert unknown == set(), f"compose sets variables nothing reads: {sorted(unknown)}"
    assert {"LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "DATABASE_URL", "DATA_DIR", "MODEL_DIR", "DEVICE",
            "BACKBONE", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "REDIS_URL", "LOG_LEVEL"} <= set(env)  # fmt: skip
    assert {"PORT", "WORKERS", "THREADS"} <= gunicorn_vars


def test_backend_environment_gives_valid_settings() -> None:
    from backend.settings import Settings
    from model.backbones.names import default_backbone

    services = compose()["services"]
    settings = Settings.from_env({k: str(v) for k, v in services["ml-backend"]["environment"].items()})
    assert settings.label_studio_url == "http://label-studio:8080"
    assert settings.device == "cpu" and settings.backbone_checkpoint is None
    assert settings.backbone == default_backbone()  # BACKBONE empty: movenet where fetched, else blazepose
    assert settings.basic_auth is None and settings.redis_url is None
    assert settings.data_dir == Path("/data") and settings.model_dir == Path("/data/models")
    db = urlsplit(settings.database_url)
    pg = services["postgres"]["environment"]
    assert db.scheme == "postgresql+psycopg" and db.hostname == "postgres" and db.port == 5432
    assert (db.username, db.password, db.path) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"],
                                                   "/" + pg["POSTGRES_DB"])  # fmt: skip
    # The worker variant with Redis enabled parses too and points at the redis service.
    worker = Settings.from_env({k: str(v) for k, v in services["worker"]["environment"].items()})
    assert urlsplit(worker.redis_url).hostname == "redis"


def test_worker_shares_the_backend_environment_and_runs_the_rq_worker() -> None:
    services = compose()["services"]
    web, worker = services["ml-backend"], services["worker"]
    assert {k: v for k, v in worker["environment"].items() if k != "REDIS_URL"} == {
        k: v for k, v in web["environment"].items() if k != "REDIS_URL"
    }
    assert worker["command"] == ["python", "-m", "backend", "worker"]
    assert worker["healthcheck"] == {"disable": True}, "the image's /health check cannot pass in the worker"
    assert worker["volumes"] == web["volumes"]


def test_worker_command_exists() -> None:
    main = (ROOT / "backend" / "__main__.py").read_text()
    assert re.search(r"[\"']worker[\"']", main), "backend/__main__.py has no `worker` subcommand"


def test_label_studio_side_flags() -> None:
    env = compose()["services"]["label-studio"]["environment"]
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["SENTRY_DSN"] == env["FRONTEND_SENTRY_DSN"] == ""
    backend = compose()["services"]["ml-backend"]["environment"]
    assert env["LABEL_STUDIO_USER_TOKEN"] == backend["LABEL_STUDIO_API_KEY"], (
        "LS's admin token = backend's key"
    )


def test_label_studio_database_is_created_on_the_shared_server() -> None:
    doc = compose()
    ls, pg = doc["services"]["label-studio"]["environment"], doc["services"]["postgres"]["environment"]
    assert ls["DJANGO_DB"] == "default" and ls["POSTGRE_HOST"] == "postgres" and ls["POSTGRE_PORT"] == "5432"
    assert (ls["POSTGRE_USER"], ls["POSTGRE_PASSWORD"]) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert ls["POSTGRE_NAME"] != pg["POSTGRES_DB"], "LS and the backend would share tables"
    (mount,) = doc["services"]["postgres"]["configs"]
    assert mount["target"].startswith("/docker-entrypoint-initdb.d/") and mount["target"].endswith(".sql")
    sql = doc["configs"][mount["source"]]["content"]
    assert re.fullmatch(rf"\s*CREATE DATABASE {ls['POSTGRE_NAME']};\s*", sql)


def test_ports_are_consistent() -> None:
    services = compose()["services"]
    env = docker_vars()
    exposed = [args for instruction, args in dockerfile() if instruction == "EXPOSE"]
    assert exposed == [env["PORT"]]
    assert services["ml-backend"]["ports"] == [f"9090:{env['PORT']}"]
    assert services["label-studio"]["ports"] == ["8080:8080"]
    url = urlsplit(services["ml-backend"]["environment"]["LABEL_STUDIO_URL"])
    assert url.hostname == "label-studio" and url.port == 8080
    assert {name for name, s in services.items() if s.get("ports")} == {"label-studio", "ml-backend"}


def test_depends_on_waits_for_healthy_services() -> None:
    services = compose()["services"]
    image_has_healthcheck = any(instruction == "HEALTHCHECK" for instruction, _ in dockerfile())
    for name, service in services.items():
        for target, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {target}"
            check = services[target].get("healthcheck")
            built = "build" in services[target]
            assert (check and not check.get("disable")) or (built and check is None and image_has_healthcheck)
    assert set(services["ml-backend"]["depends_on"]) == {"postgres"}
    assert set(services["worker"]["depends_on"]) == {"redis", "postgres", "ml-backend"}


def test_volumes_and_shared_local_files_folder() -> None:
    doc = compose()
    services = doc["services"]
    named = {
        v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")
    }
    assert named == set(doc["volumes"])
    backend_mounts = dict(v.split(":")[:2] for v in services["ml-backend"]["volumes"])
    assert backend_mounts == {"./data/server": "/data"}
    env = services["ml-backend"]["environment"]
    for key in ("DATA_DIR", "MODEL_DIR", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        assert PurePosixPath(env[key]).is_relative_to("/data"), key
    # LS must see the frames the backend writes, at the same absolute path.
    root = services["label-studio"]["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert root == env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    ls_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["label-studio"]["volumes"]}
    host = PurePosixPath("./data/server") / PurePosixPath(root).relative_to("/data")
    assert PurePosixPath(ls_mounts[root]) == host


def test_health_checks_of_compose_work(health_server: tuple[int, dict[str, int]], tmp_path: Path) -> None:
    port, state = health_server
    test = compose()["services"]["label-studio"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python3"] and "127.0.0.1:8080/health" in test[-1]
    command = [sys.executable, *test[2:-1], test[-1].replace(":8080/", f":{port}/")]
    assert sh(command).returncode == 0
    state["status"] = 503
    assert sh(command).returncode != 0


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_user_and_code() -> None:
    steps = dockerfile()
    froms = [args for instruction, args in steps if instruction == "FROM"]
    assert len(froms) == 1 and froms[0].startswith("python:${PYTHON_VERSION}-slim")
    assert re.search(r"^PYTHON_VERSION=3\.11$", "\n".join(a for i, a in steps if i == "ARG"), re.MULTILINE)
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), "the service must not run as root"
    assert any("useradd" in args and users[-1] in args for instruction, args in steps if instruction == "RUN")
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    assert all(f" {lib}" in runs for lib in ("libgl1", "libglib2.0-0", "libsm6", "libxext6")), "OpenCV's libs"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dockerfile_installs_the_pinned_torch(device: str, tmp_path: Path) -> None:
    (script,) = [run_args(a) for i, a in dockerfile() if i == "RUN" and "torch==" in a]
    rc, calls, err = run_script(script, docker_vars({"DEVICE": device}), tmp_path)
    assert rc == 0, err
    (call,) = calls
    args = call.split()
    pin = f"torch=={requirement_pin('torch')}"
    assert args[:2] == ["pip", "install"] and pin in args
    index = args[args.index("--index-url") + 1]
    assert f"torchvision=={requirement_pin('torchvision')}" in args, "torchvision is pinned with torch"
    if device == "cpu":
        assert index == "https://download.pytorch.org/whl/cpu"
    else:
        assert "whl/cpu" not in index
    assert docker_vars({"DEVICE": device})["DEVICE"] == device, "runtime DEVICE follows the build"


def test_docker_readme_names_the_pinned_torch() -> None:
    """docker/README.md's GPU build names the torch pair the image installs (requirements.txt's), no other."""
    text = (ROOT / "docker" / "README.md").read_text()
    for name in ("torch", "torchvision"):
        pin = requirement_pin(name)
        named = set(re.findall(rf"`{name}==([^`]+)`", text)) | set(re.findall(rf"\b{name} (\d+\.\d+\.\d+)\b", text))
        assert named == {pin}, f"docker/README.md names {name} {sorted(named)}, requirements.txt pins {pin}"


def test_dockerfile_rejects_an_unknown_device(tmp_path: Path) -> None:
    (script,) = [run_args(a) for i, a in dockerfile() if i == "RUN" and "torch==" in a]
    rc, calls, err = run_script(script, docker_vars({"DEVICE": "auto"}), tmp_path)
    assert rc != 0 and calls == [] and "DEVICE" in err and "'auto'" in err


@pytest.mark.parametrize("test_env", ["false", "true"])
def test_dockerfile_requirements_step(test_env: str, tmp_path: Path) -> None:
    (script,) = [run_args(a) for i, a in dockerfile() if i == "RUN" and "requirements.txt" in a]
    rc, calls, err = run_script(script, docker_vars({"TEST_ENV": test_env}), tmp_path)
    assert rc == 0, err
    pips = [c for c in calls if c.startswith("pip ")]
    expected = ["pip install -r requirements.txt", "pip install --no-deps -r requirements-nodeps.txt"]
    assert pips == expected + (["pip install -r requirements-test.txt"] if test_env == "true" else [])
    assert any(c.startswith("python -c import") and "mediapipe" in c for c in calls), "import smoke test"


def test_dockerfile_cmd_is_a_valid_gunicorn_command(tmp_path: Path) -> None:
    from gunicorn.config import Config

    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "gunicorn").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (fakebin / "gunicorn").chmod(0o755)
    env = {**docker_vars(), "PATH": f"{fakebin}:/usr/bin:/bin"}
    proc = sh(dict(dockerfile())["CMD"], env)
    assert proc.returncode == 0, proc.stderr
    args = Config().parser().parse_args(proc.stdout.splitlines())
    assert (args.bind, args.workers, args.threads, args.timeout, args.preload_app) == (
        [":9090"],
        1,
        8,
        0,
        True,
    )
    assert args.args == ["backend.wsgi:app"]


def test_wsgi_entry_defines_app() -> None:
    module, _, attribute = "backend.wsgi:app".partition(":")
    wsgi = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    assigned = {
        t.id for n in wsgi.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    assert attribute in assigned, f"{module} defines no `{attribute}`"


def test_dockerfile_healthcheck_hits_health(
    health_server: tuple[int, dict[str, int]], tmp_path: Path
) -> None:
    port, state = health_server
    command = dict(dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1]
    pybin = tmp_path / "py"
    pybin.mkdir()
    (pybin / "python").symlink_to(sys.executable)
    env = {**os.environ, **docker_vars(), "PORT": str(port), "PATH": f"{pybin}:/usr/bin:/bin"}
    assert sh(command, env).returncode == 0
    state["status"] = 503
    assert sh(command, env).returncode != 0


@pytest.mark.slow
def test_image_cmd_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """The CMD (real gunicorn, real app on SQLite) comes up and the HEALTHCHECK passes against it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **docker_vars(),
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_DIR": str(tmp_path / "data" / "models"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    check = dict(dockerfile())["HEALTHCHECK"].split(" CMD ", 1)[1]
    server = subprocess.Popen(["sh", "-c", dict(dockerfile())["CMD"]], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while sh(check, env).returncode != 0:
            assert server.poll() is None, f"gunicorn exited: {server.communicate()[0][-2000:]}"
            assert time.monotonic() < deadline, "no healthy /health within 60 s"
            time.sleep(0.2)
        assert (tmp_path / "data" / "backend.db").exists(), "DATA_DIR from the environment is not used"
    finally:
        server.terminate()  # `exec gunicorn`: this is the gunicorn master
        server.communicate(timeout=30)


# ----------------------------------------------------------------------------- .dockerignore, secrets


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches the path."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[cod\]", "[cod]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    copied = [src for i, a in dockerfile() if i == "COPY" for src in a.split()[:-1]]
    assert copied, "no COPY found"
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), f"{src} is copied but excluded from the build context"
    assert not dockerignored("backend/db/migrations/env.py")
    for path in (".venv/bin/python", ".git/HEAD", "data/backend.db", "docker/.env", "docker/data/server/x",
                 "model/weights.pth", "backend/__pycache__/app.cpython-311.pyc", "runs/x", "Makefile"):  # fmt: skip
        assert dockerignored(path), path


def test_no_secrets_committed() -> None:
    # Compose: every secret-looking variable comes from docker/.env, with no default.
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, service in doc["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and value not in (None, "", "true", "false"):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}|\$\{[A-Z_]+:-\}", str(value)), f"{name}.{key}"
    # .env.example: placeholders only.
    for key, value in read_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(key) and value:
            assert value.startswith("change-me"), f".env.example {key} must be a change-me placeholder"
    # Dockerfile: no secret baked into ENV/ARG.
    for instruction, args in dockerfile():
        if instruction in ("ENV", "ARG"):
            assert not SECRET_NAME.search(args), args
    # Nothing that looks like a real token (long hex/base64 runs) in any deployment file.
    for path in (DOCKERFILE, COMPOSE, ENV_EXAMPLE, ROOT / "docker" / "README.md", ROOT / ".dockerignore"):
        assert not re.search(r"\b[0-9a-f]{32,}\b|\b[A-Za-z0-9+/]{40,}\b", path.read_text()), path


def test_image_self_test_runs_the_gpu_check_on_cuda(tmp_path: Path) -> None:
    copied = [src for i, a in dockerfile() if i == "COPY" for src in a.split()[:-1]]
    assert "scripts" in copied, "the image needs scripts/ for its self-test"
    assert "!scripts" in (ROOT / ".dockerignore").read_text().splitlines()
    assert "scripts/self_test.sh" in DOCKERFILE.read_text()
    # Run the real self-test script with a stand-in gpu_check.sh that records its arguments.
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "self_test.sh", tmp_path / "scripts" / "self_test.sh")
    stand_in = tmp_path / "scripts" / "gpu_check.sh"
    stand_in.write_text('#!/usr/bin/env bash\necho "gpu_check $*"\n')
    stand_in.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "DEVICE": "cuda", "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "self_test.sh")], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gpu_check {tmp_path / 'data' / 'gpu_check.json'}"
