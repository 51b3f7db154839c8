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
