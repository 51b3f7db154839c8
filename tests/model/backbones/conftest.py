"""Fixtures and helpers shared by the backbone tests: one landmark model per test module; limb joints on stills."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.backbones.blazepose import BlazePoseBackbone


@pytest.fixture(scope="module")
def backbone() -> Iterator[BlazePoseBackbone]:
    pytest.importorskip("mediapipe")
    with BlazePoseBackbone() as bp:
        yield bp


STILLS = Path(__file__).resolve().parents[2] / "assets" / "real-stills"  # four of the shared set (its README)


def limb_joints_per_still(backbone: str, checkpoint: str | os.PathLike[str] | None = None, *,
                          stills: Path = STILLS, turn: bool = True) -> list[int]:  # fmt: skip
    """Limb joints within 0.1 x box diagonal on each still of `stills` (default the test stills), the annotated
    boxes given as box-only labels; `turn`: MoveNet's turned passes (`MoveNetBackbone.turn`) on or off."""
    from annotation_io.types import Frame, Video
    from model.bench.real import _Still, box_only, load_stills
    from model.bench.real_score import score_frame
    from model.pipeline.predictor import Predictor

    predictor = Predictor.create(backbone, checkpoint)
    if not turn:
        predictor.backbone.turn = False
    try:
        scores = []
        for gt, image in load_stills(stills):
            video = Video(gt.name, 1, [Frame(0, [])], width=image.shape[1], height=image.shape[0])
            pred = predictor.predict_video(video, box_only(gt), reader=_Still(image))
            scores.append(score_frame(gt.frames[0], pred.frames[0]).joints_ok)
        return scores
    finally:
        predictor.close()
