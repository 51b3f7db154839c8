"""Held-out real images for `bench-real --data`: mmpose's test data converted to the real-stills layout.

The README's held-out figures (12 photographs, 30 annotated people, 304 limb joints) come from the
test data of the open-mmlab/mmpose repository (Apache-2.0; the images come from PoseTrack 2018, MPII,
AI Challenger and Human-Art, whose terms apply), which this project does not ship. This script writes
them in the layout of ``../shared/data/real-stills`` (one one-frame PoseTrack 2018 video per image:
``annotations/val/<name>.json`` + ``images/val/<name>/000000.jpg``) from a checkout of mmpose:

- ``tests/data/posetrack18``: 3 val frames at 1920x1080 (wheelchair dancers, a ballroom couple, wrestlers in a
  close-up), already in the 17 PoseTrack slots; their ``bbox`` and ``bbox_head`` are kept;
- ``tests/data/mpii``: 5 images, one person each; MPII has no person box, so the box is the extent of
  the annotated joints grown by 10% of its size on each side (clipped to the image);
- ``tests/data/aic``: 3 AI Challenger images, 14 joints (head top and neck go to PoseTrack's head_top
  and head_bottom);
- ``tests/data/humanart``: the one real photograph (``real_human``); drawings and figurines are left out.

Like the real stills, joints the source does not annotate are (0, 0, 0); a person box without a head
box gets the stills' proxy (a square of 0.15 x the box height at the top of the box), so poseval AP on
these files compares between runs on these files only. People with no annotated limb joint are left out.

    python -m scripts.heldout_from_mmpose --mmpose PATH/TO/mmpose --out /tmp/heldout
    python -m model bench-real --data /tmp/heldout
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from annotation_io import posetrack
from annotation_io.types import Box, Frame, Person, Video
from model.bench.real import clear_stills_output
from model.bench.real_score import LIMB_SLOTS

HEAD_PROXY = 0.15  # the real stills' head box: a square of this x the person box height, top centre
MPII_BOX_MARGIN = 0.1  # an MPII person box: the joints' extent grown by this x its size on each side

# source joint index -> PoseTrack slot (nose 0, head_bottom 1, head_top 2, shoulders 5/6, elbows 7/8,
# wrists 9/10, hips 11/12, knees 13/14, ankles 15/16; left first)
MPII_TO_POSETRACK = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 8: 1, 9: 2, 10: 10, 11: 8, 12: 6, 13: 5,
                     14: 7, 15: 9}  # pelvis (6) and thorax (7) have no slot
AIC_TO_POSETRACK = {0: 6, 1: 8, 2: 10, 3: 5, 4: 7, 5: 9, 6: 12, 7: 14, 8: 16, 9: 11, 10: 13, 11: 15, 12: 2, 13: 1}
COCO_TO_POSETRACK = {0: 0, **{i: i for i in range(5, 17)}}  # eyes and ears: the stills leave them out


class SourceError(Exception):
    """The mmpose folder lacks a file this script reads, or a file is not what it expects."""


def _keypoints(mapping: Mapping[int, int], points: Sequence[Sequence[float]], visible: Sequence[float]) -> np.ndarray:
    """(17, 3) PoseTrack keypoints (x, y, 1 where annotated, else 0, 0, 0) from source joints."""
    out = np.zeros((17, 3))
    for src, slot in mapping.items():
        x, y = float(points[src][0]), float(points[src][1])
        if visible[src] > 0 and (x > 0 or y > 0):
            out[slot] = (x, y, 1.0)
    return out


def _coco_style(flat: Sequence[float], mapping: Mapping[int, int]) -> np.ndarray:
    arr = np.asarray(flat, dtype=float).reshape(-1, 3)
    return _keypoints(mapping, arr[:, :2], arr[:, 2])


def _head_proxy(box: Box) -> Box:
    side = HEAD_PROXY * box.h
    return Box(box.x + box.w / 2.0 - side / 2.0, box.y, side, side)


def _person(index: int, box: Box, keypoints: np.ndarray, head: Box | None = None) -> Person:
    return Person(keypoints=keypoints, track_id=index, box=box, head_box=head or _head_proxy(box))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise SourceError(f"{path} is missing (is --mmpose a checkout of open-mmlab/mmpose?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} is not JSON: {exc}") from exc


@functools.cache  # an MPII image is measured for its box, then again when copied
def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path} is missing or does not decode")
    return image.shape[1], image.shape[0]


def _posetrack(data: Path) -> Iterator[tuple[str, Path, list[Person]]]:
    doc = _read_json(data / "posetrack18" / "annotations" / "test_posetrack18_val.json")
    for image in doc["images"]:
        people = []
        for ann in (a for a in doc["annotations"] if a["image_id"] == image["id"] and a.get("bbox")):
            kps = _coco_style(ann["keypoints"], {i: i for i in range(17)})
            head = Box(*map(float, ann["bbox_head"])) if ann.get("bbox_head") else None
            people.append(_person(len(people), Box(*map(float, ann["bbox"])), kps, head))
        yield "posetrack_" + Path(image["file_name"]).parent.name, data / "posetrack18" / image["file_name"], people


def _mpii(data: Path) -> Iterator[tuple[str, Path, list[Person]]]:
    for record in _read_json(data / "mpii" / "test_mpii.json"):
        path = data / "mpii" / record["image"]
        width, height = _image_size(path)
        kps = _keypoints(MPII_TO_POSETRACK, record["joints"], record["joints_vis"])
        seen = np.array([j for j, v in zip(record["joints"], record["joints_vis"]) if v and (j[0] > 0 or j[1] > 0)])
        (x1, y1), (x2, y2) = seen.min(0), seen.max(0)
        dx, dy = MPII_BOX_MARGIN * (x2 - x1), MPII_BOX_MARGIN * (y2 - y1)
        box = Box.from_xyxy(max(0.0, x1 - dx), max(0.0, y1 - dy), min(width, x2 + dx), min(height, y2 + dy))
        yield "mpii_" + Path(record["image"]).stem, path, [_person(0, box, kps)]


def _coco_like(data: Path, folder: str, annotations: str, mapping: Mapping[int, int], prefix: str,
               keep: str = "") -> Iterator[tuple[str, Path, list[Person]]]:  # fmt: skip
    doc = _read_json(data / folder / annotations)
    for image in doc["images"]:
        if keep not in image["file_name"]:
            continue
        anns = [a for a in doc["annotations"] if a["image_id"] == image["id"]]
        people = [_person(i, Box(*map(float, a["bbox"])), _coco_style(a["keypoints"], mapping)) for i, a in enumerate(anns)]
        name = Path(image["file_name"]).name
        path = next((p for p in (data / folder).rglob(name)), data / folder / name)
        yield f"{prefix}_{Path(name).stem}", path, people


def sources(data: Path) -> Iterator[tuple[str, Path, list[Person]]]:
    """(name, image path, annotated people) of each held-out image under mmpose's ``tests/data``."""
    yield from _posetrack(data)
    yield from _mpii(data)
    yield from _coco_like(data, "aic", "test_aic.json", AIC_TO_POSETRACK, "aic")
    yield from _coco_like(data, "humanart", "test_humanart.json", COCO_TO_POSETRACK, "humanart", keep="real_human")


def convert(mmpose: Path, out: Path) -> tuple[int, int, int]:
    """Writes the held-out images to `out` (replaced); returns (images, people, annotated limb joints)."""
    data = mmpose / "tests" / "data"
    if not data.is_dir():
        raise SourceError(f"{mmpose} has no tests/data folder (pass a checkout of open-mmlab/mmpose)")
    if not clear_stills_output(out):
        raise SourceError(f"--out {out} exists and holds more than an earlier run's output; give a new folder")
    images = people = joints = 0
    for name, path, persons in sources(data):
        limbs = {id(p): int((p.keypoints[LIMB_SLOTS, 2] > 0).sum()) for p in persons}
        persons = [p for p in persons if limbs[id(p)]]
        width, height = _image_size(path)
        target = out / "images" / "val" / name / "000000.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        frame = Frame(0, persons, is_labeled=True, file_name=f"images/val/{name}/000000.jpg")
        video = Video(name, 1, [frame], width=width, height=height)
        (out / "annotations" / "val").mkdir(parents=True, exist_ok=True)
        posetrack.dump_2018(video, out / "annotations" / "val" / f"{name}.json")
        images += 1
        people += len(persons)
        joints += sum(limbs[id(p)] for p in persons)
    return images, people, joints


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.heldout_from_mmpose",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mmpose", type=Path, required=True, help="a checkout of open-mmlab/mmpose")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write: new, empty, or an earlier run's output (which is replaced)")
    args = parser.parse_args(argv)
    try:
        images, people, joints = convert(args.mmpose, args.out)
    except (SourceError, KeyError, IndexError, TypeError, ValueError) as exc:
        why = str(exc) if isinstance(exc, SourceError) else f"an annotation file is not in the expected format ({exc!r})"
        print(f"error: {why}", file=sys.stderr)
        return 1
    print(f"{images} images, {people} people, {joints} annotated limb joints -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
