"""Tests of annotation_io.jsonio.atomic_open: all-or-nothing file replacement."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from annotation_io import jsonio
from annotation_io.jsonio import atomic_open, write_json


def test_atomic_open_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    with atomic_open(target) as handle:
        handle.write('{"v": 1}')
    with atomic_open(target, "wb") as handle:
        handle.write(b'{"v": 2}')
    assert target.read_bytes() == b'{"v": 2}'
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as handle:
            handle.write("half of the new cont")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_only_write_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "x", "a"):
            pass


@pytest.fixture()
def umask_027() -> Iterator[int]:
    """The process umask set to 0o027 (not the usual 0o022, so a default cannot pass by chance)."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path, umask_027: int) -> None:
    """Before: every file written through mkstemp was 0o600 whatever the umask, so a team sharing a results
    folder could not read one another's predictions."""
    plain = tmp_path / "plain.json"
    with open(plain, "w") as handle:
        handle.write("{}")
    assert _mode(plain) == 0o640
    write_json({"v": 1}, tmp_path / "pred.json")
    with atomic_open(tmp_path / "head.pt", "wb") as handle:
        handle.write(b"weights")
    assert _mode(tmp_path / "pred.json") == _mode(tmp_path / "head.pt") == 0o640
    old = os.umask(0o002)
    try:
        write_json({"v": 1}, tmp_path / "shared.json")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "shared.json") == 0o664
    with atomic_open(tmp_path / "cached.jpg", "wb", private=True) as handle:  # the service's copy of a task image
        handle.write(b"pixels")
    assert _mode(tmp_path / "cached.jpg") == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_umask_is_read_without_proc_too(
    tmp_path: Path, umask_027: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert jsonio._current_umask() == umask_027

    def no_proc(file: object, *args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", file)

    monkeypatch.setattr(jsonio, "open", no_proc, raising=False)  # shadows the builtin within jsonio
    assert jsonio._current_umask() == umask_027
    assert os.umask(umask_027) == umask_027  # the round-trip restored it
    write_json({"v": 1}, tmp_path / "pred.json")
    assert _mode(tmp_path / "pred.json") == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_existing_file_keeps_its_mode(tmp_path: Path, umask_027: int) -> None:
    """Replacing a file keeps the permissions its owner gave it, as writing it in place would."""
    for mode in (0o644, 0o600, 0o604):
        target = tmp_path / f"pred-{mode:o}.json"
        target.write_text("old")
        target.chmod(mode)
        write_json({"v": 2}, target)
        assert target.read_text() == '{"v": 2}\n'
        assert _mode(target) == mode, f"{mode:o} became {_mode(target):o}"
    real = tmp_path / "real.json"
    real.write_text("old")
    real.chmod(0o604)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json({"v": 3}, link)  # the link is replaced by the file; it keeps the mode of the one it named
    assert not link.is_symlink() and _mode(link) == 0o604
    broken = tmp_path / "broken.json"
    broken.symlink_to(tmp_path / "gone.json")
    write_json({"v": 4}, broken)
    assert _mode(broken) == 0o640
