"""COCO keypoints JSON <-> Video, plus the COCO-style parts that PoseTrack 2018 files share.

A COCO keypoints file has `images`, `annotations` and `categories`. PoseTrack 2018 per-video files
and the merged PoseTrack JSONs DCPose trains on use the same layout (an annotation holds 51
`keypoints` numbers x, y, v in the 17-slot order of `annotation_io.skeletons`, `bbox` [x, y, w, h]).
They add `bbox_head`, `track_id`, `scores` and the image fields `vid_id`, `nframes`, `frame_id` and
`is_labeled`. This module reads and writes that shared layout, and `annotation_io.posetrack` reuses
the helpers marked "shared" below.

Conventions:
- `load` groups images into videos by `vid_id` (or, when only `nframes` is there, by the folder of
  `file_name`). Otherwise it returns one pseudo-video whose frames are the images in file order.
- Frame.index is `frame_id % 10000` (PoseTrack ids are T*10^10 + video*10^4 + frame) when every
  image has one and the indices are unique and below `nframes`; else it is the rank of the image id.
- Keypoint v is kept as loaded. `dump` always writes the PoseTrack person category (17 names,
  1-based skeleton), whatever names the loaded category used.
- Unknown fields pass through in `extra` dicts. Keys starting with `_` (private markers) or `ls_`
  (Label Studio's) and fields of the PoseTrack 2017 layout are never written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from annotation_io.jsonio import (
    FieldReader,
    JsonInput,
    add_extra,
    json_number,
    plain,
    read_json,
    write_json,
)
from annotation_io.skeletons import KEYPOINT_INDEX, NUM_KEYPOINTS, POSETRACK_KEYPOINTS, SKELETON_1BASED
from annotation_io.types import Box, Frame, Person, Video

logger = logging.getLogger(__name__)


# Video.extra marker: the images carried no video fields (no vid_id/nframes), so none are written.
PSEUDO_VIDEO_KEY = "_coco_pseudo_video"
# PoseTrack 2017 fields (annolist entries / annorect) never written into a COCO-style file.
PT17_FIELDS = frozenset(
    {"image", "imgnum", "annorect", "ignore_regions", "annopoints", "x1", "y1", "x2", "y2"}
)
# Fields this module consumes or writes itself; `extra` copies of them are never passed through.
_IMAGE_FIELDS = ("id", "file_name", "vid_id", "nframes", "ignore_regions_x", "ignore_regions_y")
_ANNOTATION_FIELDS = ("image_id", "keypoints", "bbox", "bbox_head", "track_id", "scores", "score")


def person_category() -> dict[str, Any]:
    """Shared: the PoseTrack person category (17 keypoint names, 1-based skeleton)."""
    return {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(POSETRACK_KEYPOINTS),
        "skeleton": [list(pair) for pair in SKELETON_1BASED],
    }


def categories_for(extra: dict[str, Any]) -> list[Any]:
    """Shared: the loaded `categories` when their person category uses the 17 PoseTrack names."""
    loaded = extra.get("categories")
    if isinstance(loaded, list):
        people = [c for c in loaded if isinstance(c, dict) and c.get("keypoints") is not None]
        if len(people) == 1 and list(people[0]["keypoints"]) == list(POSETRACK_KEYPOINTS):
            return plain(loaded)
    return [person_category()]


@dataclass
class ImageEntry:
    """Shared: one parsed `images[]` entry, its Frame (persons attached) and its video fields."""

    frame: Frame
    where: str
    vid_id: str | None = None
    nframes: int | None = None
    frame_id: int | None = None
    size: tuple[int, int] | None = None


@dataclass
class _Category:
    slots: list[int | None] = field(default_factory=lambda: list(range(NUM_KEYPOINTS)))
    person_id: int | None = None


def _person_category(top: dict[str, Any], reader: FieldReader) -> _Category:
    if "categories" not in top:
        return _Category()
    cats = reader.list_(top["categories"], "categories")
    for i, cat in enumerate(cats):
        cat = reader.dict_(cat, f"categories[{i}]")
        if cat.get("name") != "person" and "keypoints" not in cat:
            continue
        where = f"categories[{i}]"
        person_id = reader.int_(cat["id"], f"{where}.id") if "id" in cat else None
        if "keypoints" not in cat:
            return _Category(person_id=person_id)
        listed = reader.list_(cat["keypoints"], f"{where}.keypoints")
        names = [reader.str_(n, f"{where}.keypoints[{k}]") for k, n in enumerate(listed)]
        unknown = [n for n in names if n not in KEYPOINT_INDEX]
        if unknown:
            logger.warning("%s: keypoints %s have no PoseTrack slot and are dropped", reader.source, unknown)
        return _Category([KEYPOINT_INDEX.get(n) for n in names], person_id)
    return _Category()


def parse_ignore_regions(image: dict[str, Any], reader: FieldReader, where: str) -> list[np.ndarray] | None:
    """Shared: `ignore_regions_x`/`_y` polygons as (N, 2) arrays; None when absent or both empty."""
    if "ignore_regions_x" not in image and "ignore_regions_y" not in image:
        return None
    xs = reader.list_(reader.req(image, "ignore_regions_x", where), f"{where}.ignore_regions_x")
    ys = reader.list_(reader.req(image, "ignore_regions_y", where), f"{where}.ignore_regions_y")
    if len(xs) != len(ys):
        raise reader.error(f"{len(xs)} x polygons but {len(ys)} y polygons", f"{where}.ignore_regions_y")
    if not xs:
        return None
    regions = []
    for k, (px, py) in enumerate(zip(xs, ys)):
        px = reader.nums(px, f"{where}.ignore_regions_x[{k}]")
        py = reader.nums(py, f"{where}.ignore_regions_y[{k}]", count=len(px))
        regions.append(np.array([px, py], dtype=np.float64).T.reshape(-1, 2))
    return regions


def ignore_region_fields(frame: Frame) -> dict[str, Any]:
    """Shared: `ignore_regions_x`/`_y` for a frame with ignore regions, else {}."""
    if not frame.ignore_regions:
        return {}
    xs = [[json_number(v) for v in np.asarray(r)[:, 0]] for r in frame.ignore_regions]
    ys = [[json_number(v) for v in np.asarray(r)[:, 1]] for r in frame.ignore_regions]
    return {"ignore_regions_x": xs, "ignore_regions_y": ys}


def _box_or_extra(ann: dict[str, Any], key: str, reader: FieldReader, where: str, extra: dict) -> Box | None:
    if key not in ann or ann[key] is None or ann[key] == []:
        if key in ann:
            extra[key] = ann[key]  # `[]` / null pass through unchanged
        return None
    return Box(*reader.nums(ann[key], f"{where}.{key}", count=4))


def person_from_annotation(
    ann: dict[str, Any], reader: FieldReader, where: str, slots: list[int | None] | None = None
) -> Person:
    """Shared: a COCO/PoseTrack 2018 annotation as a Person (`image_id` is the caller's business).

    An annotation with a ``bbox`` and no ``keypoints`` (absent, null or ``[]``) is a box-only label:
    a Person with the box and no joints placed.
    """
    slots = list(range(NUM_KEYPOINTS)) if slots is None else slots
    keypoints = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
    if ann.get("keypoints") in (None, []) and ann.get("bbox"):
        pass  # a box-only label: an annotator drew the box, the keypoints are to be predicted inside it
    else:
        values = reader.nums(reader.req(ann, "keypoints", where), f"{where}.keypoints", count=3 * len(slots))
        for k, slot in enumerate(slots):
            if slot is not None:
                keypoints[slot] = values[3 * k : 3 * k + 3]
    extra = {k: v for k, v in ann.items() if k not in _ANNOTATION_FIELDS}
    scores = None
    if ann.get("scores"):
        loaded = reader.nums(ann["scores"], f"{where}.scores", count=len(slots))
        scores = np.zeros(NUM_KEYPOINTS, dtype=np.float64)
        for k, slot in enumerate(slots):
            if slot is not None:
                scores[slot] = loaded[k]
    track_id = ann.get("track_id")
    score = ann.get("score")
    return Person(
        keypoints=keypoints,
        scores=scores,
        track_id=None if track_id is None else reader.int_(track_id, f"{where}.track_id"),
        box=_box_or_extra(ann, "bbox", reader, where, extra),
        head_box=_box_or_extra(ann, "bbox_head", reader, where, extra),
        score=None if score is None else reader.num(score, f"{where}.score"),
        extra=extra,
    )


def annotation_from_person(person: Person, ann_id: int, image_id: int, *, coco: bool) -> dict[str, Any]:
    """Shared: a Person as a COCO (`coco=True`) or PoseTrack 2018 annotation dict."""
    out: dict[str, Any] = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": person.extra.get("category_id", 1),
    }
    if person.track_id is not None:
        out["track_id"] = int(person.track_id)
    out["keypoints"] = [json_number(v) for v in person.keypoints.reshape(-1)]
    box = person.box if person.box is not None or not coco else person.keypoint_box()
    if box is not None:
        out["bbox"] = [json_number(v) for v in box.xywh]
    if person.head_box is not None:
        out["bbox_head"] = [json_number(v) for v in person.head_box.xywh]
    if person.scores is not None:
        out["scores"] = [json_number(v) for v in person.scores]
    elif not coco:
        out["scores"] = []  # PoseTrack 2018 GT convention
    if person.score is not None:
        out["score"] = json_number(person.score)
    if coco:
        out["num_keypoints"] = int(person.present.sum())
        out["area"] = person.extra.get("area", json_number(box.area) if box is not None else 0)
        out["iscrowd"] = person.extra.get("iscrowd", 0)
    return add_extra(out, person.extra, PT17_FIELDS)


def _flag(value: Any, reader: FieldReader, where: str) -> bool:
    """A yes/no field: true/false or 0/1 (a string such as "false" is refused, not read as true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise reader.error(f"expected true/false (or 0/1), got {value!r}", where)


def _size(image: dict[str, Any], reader: FieldReader, where: str) -> tuple[int, int]:
    """`width` and `height` of an image entry, each a positive integer."""
    sides = []
    for key in ("width", "height"):
        side = reader.int_(image[key], f"{where}.{key}")
        if side < 1:
            raise reader.error(f"expected a positive number of pixels, got {side}", f"{where}.{key}")
        sides.append(side)
    return sides[0], sides[1]


def parse_images(top: dict[str, Any], reader: FieldReader, *, default_labeled: bool) -> list[ImageEntry]:
    """Shared: `images` and `annotations` of a COCO-style dict as entries in file order (index unset)."""
    images = reader.list_(reader.req(top, "images", None), "images")
    annotations = reader.list_(reader.req(top, "annotations", None), "annotations")
    category = _person_category(top, reader)
    entries: list[ImageEntry] = []
    by_id: dict[int, ImageEntry] = {}
    for i, image in enumerate(images):
        where = f"images[{i}]"
        image = reader.dict_(image, where)
        image_id = reader.int_(reader.req(image, "id", where), f"{where}.id")
        if image_id in by_id:
            raise reader.error(f"duplicate image id {image_id} (also {by_id[image_id].where})", f"{where}.id")
        file_name = image.get("file_name")
        regions = parse_ignore_regions(image, reader, where)
        extra = {k: v for k, v in image.items() if k not in _IMAGE_FIELDS}
        if regions is None:  # absent or both empty: empty lists pass through as written
            extra.update({k: image[k] for k in ("ignore_regions_x", "ignore_regions_y") if k in image})
        frame = Frame(
            index=-1,
            is_labeled=_flag(image.get("is_labeled", default_labeled), reader, f"{where}.is_labeled"),
            ignore_regions=regions or [],
            file_name=None if file_name is None else reader.str_(file_name, f"{where}.file_name"),
            image_id=image_id,
            extra=extra,
        )
        entry = ImageEntry(frame, where)
        if "vid_id" in image:
            vid = image["vid_id"]
            entry.vid_id = str(reader.int_(vid, f"{where}.vid_id") if not isinstance(vid, str) else vid)
        if "nframes" in image:
            entry.nframes = reader.int_(image["nframes"], f"{where}.nframes")
        if "frame_id" in image:
            entry.frame_id = reader.int_(image["frame_id"], f"{where}.frame_id")
        if "width" in image and "height" in image:
            entry.size = _size(image, reader, where)
        entries.append(entry)
        by_id[image_id] = entry
    for j, ann in enumerate(annotations):
        where = f"annotations[{j}]"
        ann = reader.dict_(ann, where)
        image_id = reader.int_(reader.req(ann, "image_id", where), f"{where}.image_id")
        if image_id not in by_id:
            raise reader.error(f"image_id {image_id} matches no entry of images", f"{where}.image_id")
        if (
            category.person_id is not None
            and ann.get("category_id", category.person_id) != category.person_id
        ):
            logger.debug(
                "%s: %s is not a person (category_id %r); skipped", reader.source, where, ann["category_id"]
            )
            continue
        by_id[image_id].frame.persons.append(person_from_annotation(ann, reader, where, category.slots))
    return entries


def assign_indices(entries: list[ImageEntry], nframes: int | None, *, file_order: bool) -> None:
    """Shared: set Frame.index from `frame_id % 10000` when consistent, else by id rank/file order."""
    ids = [e.frame_id for e in entries]
    if entries and all(i is not None for i in ids):
        indices = [int(i) % 10000 for i in ids]  # type: ignore[arg-type]
        if len(set(indices)) == len(indices) and (nframes is None or max(indices) < nframes):
            for entry, index in zip(entries, indices):
                entry.frame.index = index
            return
    order = entries if file_order else sorted(entries, key=lambda e: e.frame.image_id or 0)
    for index, entry in enumerate(order):
        entry.frame.index = index


def video_fields(entries: list[ImageEntry], reader: FieldReader) -> tuple[str | None, int | None]:
    """Shared: the one `vid_id` and `nframes` the entries agree on; error naming a disagreeing one."""
    result: list[Any] = [None, None]
    for k, name in enumerate(("vid_id", "nframes")):
        first = next((e for e in entries if getattr(e, name) is not None), None)
        for e in entries:
            if first is not None and getattr(e, name) != getattr(first, name):
                raise reader.error(
                    f"{name} {getattr(e, name)!r} differs from {getattr(first, name)!r} of {first.where}",
                    f"{e.where}.{name}",
                )
        result[k] = None if first is None else getattr(first, name)
    return result[0], result[1]


def make_video(name: str, entries: list[ImageEntry], nframes: int | None, extra: dict[str, Any]) -> Video:
    """Shared: a Video of the entries' frames; width/height set when all images agree on a size."""
    frames = [e.frame for e in entries]
    sizes = {e.size for e in entries}
    width, height = sizes.pop() if len(sizes) == 1 and None not in sizes else (None, None)
    num_frames = nframes if nframes is not None else max((f.index + 1 for f in frames), default=0)
    return Video(name=name, num_frames=num_frames, frames=frames, width=width, height=height, extra=extra)


def generated_image_id(video: Video, ordinal: int, index: int) -> int:
    """Shared: an id for a frame without one: (digit video name, else ordinal + 1) * 10^4 + index."""
    base = int(video.name) if video.name.isdigit() else ordinal + 1
    return base * 10000 + index


class IdAllocator:
    """Shared: hands out image/annotation ids and refuses duplicates with a clear ValueError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.used: set[int] = set()

    def take(self, wanted: int, what: str) -> int:
        if wanted in self.used:
            raise ValueError(f"duplicate {self.kind} id {wanted} ({what}); give it a unique id")
        self.used.add(wanted)
        return wanted


def load(path_or_dict: JsonInput, source: str | None = None) -> list[Video]:
    """Load a COCO keypoints file (or its parsed dict) as videos.

    Args:
        path_or_dict: path of a COCO keypoints JSON file, or the parsed dict.
        source: name used in error messages (defaults to the path).

    Returns:
        One Video per `vid_id` (or `file_name` folder when only `nframes` is given) in order of
        first appearance; or one pseudo-video of all images in file order.

    Raises:
        AnnotationFormatError: the file is not valid JSON or not a COCO keypoints dict.
    """
    data, source = read_json(path_or_dict, source)
    reader = FieldReader(source)
    top = reader.dict_(data, None)
    entries = parse_images(top, reader, default_labeled=True)
    extra = {k: v for k, v in top.items() if k not in ("images", "annotations")}
    stem = Path(source).stem if not isinstance(path_or_dict, dict) else "coco"

    def key(e: ImageEntry) -> str | None:
        if e.vid_id is not None:
            return e.vid_id
        if e.nframes is not None:
            if e.frame.file_name is None:
                raise reader.error("an image with nframes needs vid_id or file_name", e.where)
            return str(PurePosixPath(e.frame.file_name).parent)
        return None

    groups: dict[str | None, list[ImageEntry]] = {}
    for e in entries:
        groups.setdefault(key(e), []).append(e)
    if None in groups and len(groups) > 1:
        raise reader.error("image carries neither vid_id nor nframes while others do", groups[None][0].where)
    if None in groups or not groups:
        assign_indices(entries, None, file_order=True)
        return [make_video(stem, entries, len(entries), {**extra, PSEUDO_VIDEO_KEY: True})]
    videos = []
    for name, group in groups.items():
        _, nframes = video_fields(group, reader)
        assign_indices(group, nframes, file_order=False)
        videos.append(make_video(str(name), group, nframes, dict(extra)))
    return videos


def dump(videos: Video | Iterable[Video], path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write videos as one COCO keypoints dict (and file when `path` is given).

    Images carry `id`, `file_name`, `width`/`height` when known and, unless the video is a loaded
    pseudo-video, `vid_id`, `nframes`, `frame_id` and `is_labeled`, so `load` regroups them.
    Annotations carry keypoints, bbox (the keypoint box when a person has none), area, iscrowd,
    num_keypoints, plus track_id, bbox_head, scores and score where set. Top-level fields such as
    `info` and `licenses` come from the first video's extra.

    Raises:
        ValueError: two frames or persons would share an id, or a number is NaN/inf.
    """
    videos = [videos] if isinstance(videos, Video) else list(videos)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    image_ids, ann_ids = IdAllocator("image"), IdAllocator("annotation")
    for ordinal, video in enumerate(videos):
        pseudo = bool(video.extra.get(PSEUDO_VIDEO_KEY))
        for frame in video.frames:
            what = f"video {video.name!r} frame {frame.index}"
            wanted = (
                frame.image_id
                if frame.image_id is not None
                else generated_image_id(video, ordinal, frame.index)
            )
            image_id = image_ids.take(wanted, what)
            image: dict[str, Any] = {"id": image_id}
            if frame.file_name is not None:
                image["file_name"] = frame.file_name
            for key, value in (("width", video.width), ("height", video.height)):
                if frame.extra.get(key, value) is not None:
                    image[key] = frame.extra.get(key, value)
            if not pseudo:
                image.update(vid_id=video.name, nframes=video.num_frames, is_labeled=bool(frame.is_labeled))
                image["frame_id"] = frame.extra.get("frame_id", image_id)
            image.update(ignore_region_fields(frame))
            images.append(add_extra(image, frame.extra, PT17_FIELDS))
            for j, person in enumerate(frame.persons):
                given = person.extra.get("id")
                wanted_ann = given if isinstance(given, int) else image_id * 100 + j
                ann_id = ann_ids.take(wanted_ann, f"{what} person {j}")
                annotations.append(annotation_from_person(person, ann_id, image_id, coco=True))
    out: dict[str, Any] = {"images": images, "annotations": annotations}
    out["categories"] = categories_for(videos[0].extra) if videos else [person_category()]
    if videos:
        add_extra(out, videos[0].extra, ("annolist",))
    if path is not None:
        write_json(out, path)
    return out
