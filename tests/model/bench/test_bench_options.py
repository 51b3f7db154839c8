"""The benchmark commands refuse bad options with one line and exit status 2, before they measure anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.cli.main import main as model_main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--threads", "-1"], "--threads: must be at least 1, got -1"),
        (["bench", "--threads", "two"], "--threads: expected a whole number, got 'two'"),
        (["bench", "--batch", "0"], "--batch: must be at least 1, got 0"),
        (["bench", "--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
        (["bench-video", "--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    ],
)
def test_bench_options_are_checked_first(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert model_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_propagation_overlay_refuses_an_out_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a_file").write_text("kept")
    cases = [
        (tmp_path / "overlay.txt", "the picture is a PNG"),
        (tmp_path / "folder.png", "is a folder; give a file name"),
        (tmp_path / "a_file" / "x.png", "cannot write into"),
    ]
    (tmp_path / "folder.png").mkdir()
    for out, message in cases:
        assert model_main(["propagation-overlay", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert (tmp_path / "a_file").read_text() == "kept"
    assert not (tmp_path / "overlay.txt").exists()
