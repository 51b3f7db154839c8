"""PoseTrack 2018 per-video JSON and PoseTrack 2017 annolist JSON <-> Video (GT and predictions).

PoseTrack 2018 (the released DCPose code) is COCO-style: one file per video, `images[]` with
`file_name`, `id`, `frame_id`, `vid_id`, `nframes`, `is_labeled`, optional `ignore_regions_x/_y`,
`annotations[]` with 51 `keypoints` in the 17-slot order, `bbox`, `bbox_head`, `track_id` and
`scores` ([] in GT). The shared COCO-style parsing lives in `annotation_io.coco`.

PoseTrack 2017 is an `annolist` of frames. Each holds `image[{name}]`, `imgnum[n]` (1-based),
`is_labeled[0/1]`, `ignore_regions` and `annorect[]` persons. A person has a HEAD box `x1`..`y2`,
`track_id`, optional `score` and `annopoints[{point[...]}]` with poseval joint ids. Nearly every
value is a 1-element list. Conventions at this boundary:
- Joint ids map to the 17 slots exactly as poseval does (`skeletons.POSEVAL_FROM_17`). Ears are
  never written. poseval's id 12 is named "neck" but holds **head_bottom** (slot 1), as in
  DCPose's export; it is not a shoulder midpoint.
- A point written `is_visible [1]` becomes v=2, `[0]` becomes v=1 (labelled but occluded), and a
  point without `is_visible` (predictions) becomes v=2. A missing point is v=0. Dumping reverses
  this: label points get `is_visible` and predicted points get `score`.
- PT17 has no person box: Person.box stays None. `imgnum` 0 anywhere means the file counts from 0
  (DCPose's PT18 export). A file without `imgnum` (poseval's prediction example) is indexed by
  position. Either fact is kept in Video.extra so that dumping writes `imgnum` back the same way.
- `is_labeled`, when absent, is whether the frame has a human-labelled person. A video that has
  neither labelled frames nor labelled persons (a prediction file) is dumped without it.

Round trips are lossless for files in the official field set: `dump_2018(load_2018(d)) == d`
(ids, file names, ignore regions, scores, track ids, extra fields). The same holds for 2017.
Images are written in frame order and annotations grouped by image; 2017 points come in id order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from annotation_io import coco, jsonio
from annotation_io.errors import AnnotationFormatError
from annotation_io.jsonio import FieldReader, JsonInput, json_number
from annotation_io.skeletons import NUM_KEYPOINTS, POSEVAL_FROM_17
from annotation_io.types import Box, Frame, Person, Video

logger = logging.getLogger(__name__)

# Video.extra marker: the annolist's `imgnum` counts from this value (1 unless a file used 0).
IMGNUM_BASE_KEY = "_posetrack17_imgnum_base"
# COCO-style (PT18/COCO) fields never written into a 2017 annolist entry or annorect.
_COCO_IMAGE_FIELDS = frozenset(
    {"id", "file_name", "frame_id", "vid_id", "nframes", "is_labeled", "has_no_densepose",
     "ignore_regions_x", "ignore_regions_y", "width", "height"}
)  # fmt: skip
_COCO_ANNOTATION_FIELDS = frozenset(
    {"id", "image_id", "category_id", "keypoints", "bbox", "bbox_head", "scores", "score", "track_id",
     "area", "iscrowd", "num_keypoints", "segmentation"}
)  # fmt: skip
_ENTRY_FIELDS = ("image", "imgnum", "is_labeled", "ignore_regions", "annorect")
_RECT_FIELDS = ("x1", "y1", "x2", "y2", "track_id", "score", "annopoints")


def load(path: JsonInput, source: str | None = None) -> Video:
    """Load a PoseTrack file, detecting 2018 (`images` + `annotations`) or 2017 (`annolist`).

    Raises:
        AnnotationFormatError: invalid JSON, neither layout, or a malformed entry.
    """
    data, source = jsonio.read_json(path, source)
    if isinstance(data, dict) and "annolist" in data:
        return load_2017(data, source)
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return load_2018(data, source)
    keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise AnnotationFormatError(
        f"neither PoseTrack 2018 (needs 'images' and 'annotations') nor 2017 (needs 'annolist'); got {keys}",
        source=source,
    )


def load_dir(path: str | os.PathLike[str]) -> dict[str, Video]:
    """Load every `*.json` of a folder (one video per file), keyed by file name, sorted."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder of PoseTrack JSON files: {folder}")
    videos = {p.name: load(p) for p in sorted(folder.glob("*.json"))}
    logger.info("loaded %d PoseTrack files from %s", len(videos), folder)
    return videos


def _file_stem(path_or_dict: JsonInput, source: str) -> str:
    return Path(source).stem if not isinstance(path_or_dict, dict) or source != "<dict>" else "video"


# --- PoseTrack 2018 ---------------------------------------------------------------------------


def load_2018(path_or_dict: JsonInput, source: str | None = None) -> Video:
    """Load a PoseTrack 2018 per-video file (GT or predictions) or its parsed dict.

    Args:
        path_or_dict: the JSON file, or its parsed dict.
        source: name used in error messages (defaults to the path).

    Returns:
        The video: name from `vid_id` (else the file stem), num_frames from `nframes` (else last
        index + 1). Frame.index is `frame_id % 10000` when consistent, else the rank of the image
        id. `is_labeled` defaults to False (prediction files may leave it out). `frame_id`, `has_no_densepose` and other image fields stay in Frame.extra, the
        annotation `id`, `category_id` and unknown fields in Person.extra, `categories` and other
        top-level keys in Video.extra.
    """
    data, source = jsonio.read_json(path_or_dict, source)
    reader = FieldReader(source)
    top = reader.dict_(data, None)
    entries = coco.parse_images(top, reader, default_labeled=False)
    vid_id, nframes = coco.video_fields(entries, reader)
    coco.assign_indices(entries, nframes, file_order=False)
    extra = {k: v for k, v in top.items() if k not in ("images", "annotations")}
    return coco.make_video(vid_id or _file_stem(path_or_dict, source), entries, nframes, extra)


def dump_2018(video: Video, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The video as a PoseTrack 2018 dict (written to `path` when given).

    Frames without `image_id` get `generated_image_id` ids, persons without an `id` in extra get
    image_id * 100 + position (poseval's scheme); `frame_id` defaults to the image id.

    Raises:
        ValueError: two frames or persons would share an id, or a number is NaN/inf.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    image_ids, ann_ids = coco.IdAllocator("image"), coco.IdAllocator("annotation")
    for frame in video.frames:
        what = f"video {video.name!r} frame {frame.index}"
        wanted = (
            frame.image_id if frame.image_id is not None else coco.generated_image_id(video, 0, frame.index)
        )
        image_id = image_ids.take(wanted, what)
        image: dict[str, Any] = {} if frame.file_name is None else {"file_name": frame.file_name}
        image.update(
            id=image_id,
            frame_id=frame.extra.get("frame_id", image_id),
            vid_id=video.name,
            nframes=video.num_frames,
            is_labeled=bool(frame.is_labeled),
        )
        image.update(coco.ignore_region_fields(frame))
        images.append(jsonio.add_extra(image, frame.extra, coco.PT17_FIELDS))
        for j, person in enumerate(frame.persons):
            given = person.extra.get("id")
            wanted_ann = given if isinstance(given, int) else image_id * 100 + j
            ann_id = ann_ids.take(wanted_ann, f"{what} person {j}")
            annotations.append(coco.annotation_from_person(person, ann_id, image_id, coco=False))
    out: dict[str, Any] = {"images": images, "annotations": annotations}
    out["categories"] = coco.categories_for(video.extra)
    jsonio.add_extra(out, video.extra, ("annolist",))
    if path is not None:
        jsonio.write_json(out, path)
    return out


# --- PoseTrack 2017 ---------------------------------------------------------------------------


def _one(value: Any, reader: FieldReader, where: str) -> Any:
    """The element of a PT17 1-element list (a bare scalar is accepted too)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise reader.error(f"expected a 1-element array, got {len(value)} elements", where)
        return value[0]
    return value


def _field(obj: dict[str, Any], key: str, reader: FieldReader, where: str, *, integer: bool = False) -> Any:
    """The number in the required PT17 field `obj[key]` (a 1-element list)."""
    value = _one(reader.req(obj, key, where), reader, f"{where}.{key}")
    return reader.int_(value, f"{where}.{key}") if integer else reader.num(value, f"{where}.{key}")


def _polygons_2017(regions: list[Any], reader: FieldReader, where: str) -> list[np.ndarray]:
    polygons = []
    for r, region in enumerate(regions):
        at = f"{where}[{r}]"
        points = reader.list_(reader.req(reader.dict_(region, at), "point", at), f"{at}.point")
        xy = []
        for p, point in enumerate(points):
            point = reader.dict_(point, f"{at}.point[{p}]")
            xy.append([_field(point, c, reader, f"{at}.point[{p}]") for c in ("x", "y")])
        polygons.append(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
    return polygons


def _points_2017(rect: dict[str, Any], reader: FieldReader, where: str) -> list[Any]:
    """The `point` list of `annopoints` ([] when absent or empty)."""
    annopoints = rect.get("annopoints")
    if not annopoints:
        return []
    annopoints = reader.list_(annopoints, f"{where}.annopoints")
    if len(annopoints) > 1:
        raise reader.error(f"expected 1 point set, got {len(annopoints)}", f"{where}.annopoints")
    at = f"{where}.annopoints[0]"
    return reader.list_(reader.req(reader.dict_(annopoints[0], at), "point", at), f"{at}.point")


def _person_2017(rect: dict[str, Any], reader: FieldReader, where: str) -> Person:
    corners = [k for k in ("x1", "y1", "x2", "y2") if k in rect]
    if corners and len(corners) < 4:
        missing = sorted({"x1", "y1", "x2", "y2"} - set(corners))
        raise reader.error(f"head box needs x1, y1, x2, y2; missing {missing}", where)
    head = Box.from_xyxy(*(_field(rect, k, reader, where) for k in corners)) if corners else None
    extra = {k: v for k, v in rect.items() if k not in _RECT_FIELDS}
    points = _points_2017(rect, reader, where)
    if not points and "annopoints" in rect:
        extra["annopoints"] = rect["annopoints"]  # an empty point set passes through as written
    keypoints = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
    scores = np.zeros(NUM_KEYPOINTS, dtype=np.float64)
    scored = False
    for p, point in enumerate(points):
        at = f"{where}.annopoints[0].point[{p}]"
        point = reader.dict_(point, at)
        joint = _field(point, "id", reader, at, integer=True)
        if not 0 <= joint < len(POSEVAL_FROM_17):
            raise reader.error(
                f"expected a poseval joint id 0..{len(POSEVAL_FROM_17) - 1}, got {joint}", f"{at}.id"
            )
        slot = POSEVAL_FROM_17[joint]
        if keypoints[slot, 2] > 0:
            raise reader.error(f"joint id {joint} appears twice in this person", f"{at}.id")
        visible = _field(point, "is_visible", reader, at) if "is_visible" in point else 1.0
        keypoints[slot] = (
            _field(point, "x", reader, at),
            _field(point, "y", reader, at),
            2 if visible > 0 else 1,
        )
        if "score" in point:
            scores[slot] = _field(point, "score", reader, at)
            scored = True
    return Person(
        keypoints=keypoints,
        scores=scores if scored else None,
        track_id=_field(rect, "track_id", reader, where, integer=True) if "track_id" in rect else None,
        head_box=head,
        score=_field(rect, "score", reader, where) if "score" in rect else None,
        extra=extra,
    )


def _frame_2017(entry: dict[str, Any], reader: FieldReader, where: str) -> tuple[Frame, int | None]:
    name = None
    if "image" in entry:
        image = reader.dict_(_one(entry["image"], reader, f"{where}.image"), f"{where}.image[0]")
        name = reader.str_(reader.req(image, "name", f"{where}.image[0]"), f"{where}.image[0].name")
    imgnum = _field(entry, "imgnum", reader, where, integer=True) if "imgnum" in entry else None
    rects = reader.list_(entry.get("annorect", []), f"{where}.annorect")
    persons = []
    for j, rect in enumerate(rects):
        persons.append(
            _person_2017(reader.dict_(rect, f"{where}.annorect[{j}]"), reader, f"{where}.annorect[{j}]")
        )
    labeled = any(not p.is_prediction for p in persons)  # the default when is_labeled is absent
    if "is_labeled" in entry:
        labeled = bool(_field(entry, "is_labeled", reader, where))
    extra = {k: v for k, v in entry.items() if k not in _ENTRY_FIELDS}
    regions = reader.list_(entry.get("ignore_regions", []), f"{where}.ignore_regions")
    if not regions and "ignore_regions" in entry:
        extra["ignore_regions"] = entry["ignore_regions"]  # `[]` passes through as written
    polygons = _polygons_2017(regions, reader, f"{where}.ignore_regions")
    frame = Frame(
        index=-1, persons=persons, is_labeled=labeled, ignore_regions=polygons, file_name=name, extra=extra
    )
    return frame, imgnum


def _video_name_2017(frames: list[Frame], fallback: str) -> str:
    """poseval's video id: the digits before '_' of the first image's folder (e.g. "000342")."""
    for frame in frames:
        if frame.file_name:
            head = PurePosixPath(frame.file_name.replace("\\/", "/")).parent.name.split("_")[0]
            return head if head.isdigit() else fallback
    return fallback


def load_2017(path_or_dict: JsonInput, source: str | None = None) -> Video:
    """Load a PoseTrack 2017 annolist file (GT or predictions) or its parsed dict.

    Args:
        path_or_dict: the JSON file, or its parsed dict.
        source: name used in error messages (defaults to the path).

    Returns:
        The video: name from the image folder's leading digits (poseval's rule, else the file
        stem), Frame.index = imgnum - 1 (else the entry's position), num_frames = the larger of
        the entry count and last index + 1. Person.box is None; head boxes come from x1..y2.
    """
    data, source = jsonio.read_json(path_or_dict, source)
    reader = FieldReader(source)
    top = reader.dict_(data, None)
    annolist = reader.list_(reader.req(top, "annolist", None), "annolist")
    parsed = [
        _frame_2017(reader.dict_(e, f"annolist[{i}]"), reader, f"annolist[{i}]")
        for i, e in enumerate(annolist)
    ]
    nums = [n for _, n in parsed]
    with_num = [n is not None for n in nums]
    if any(with_num) and not all(with_num):
        raise reader.error(
            "imgnum is missing while other entries have one", f"annolist[{with_num.index(False)}]"
        )
    base = None if not any(with_num) else 0 if 0 in nums else 1
    seen: dict[int, int] = {}
    for i, (frame, num) in enumerate(parsed):
        frame.index = i if num is None or base is None else num - base
        if frame.index < 0:
            raise reader.error(f"imgnum {num} is below {base}", f"annolist[{i}].imgnum")
        if frame.index in seen:
            raise reader.error(f"imgnum {num} repeats annolist[{seen[frame.index]}]", f"annolist[{i}].imgnum")
        seen[frame.index] = i
    frames = [frame for frame, _ in parsed]
    dropped = [k for k in top if k != "annolist"]
    if dropped:
        logger.warning(
            "%s: top-level keys %s are not part of PoseTrack 2017 and are ignored", source, dropped
        )
    num_frames = max(len(frames), max((f.index + 1 for f in frames), default=0))
    video = Video(_video_name_2017(frames, _file_stem(path_or_dict, source)), num_frames, frames)
    if base != 1:
        video.extra[IMGNUM_BASE_KEY] = base
    return video


def _corner(start: float, size: float) -> float:
    """The far corner of a box side: the shortest decimal `end` with `end - start == size`.

    Box keeps widths (x2 - x1 rounded to a double), and x1 + w can miss the loaded x2 by an ulp.
    The loaded x2 is one of the values that give back exactly that width, and files hold short
    decimals, so the shortest such value is x2 again and 2017 round trips stay exact.
    """
    end = start + size
    for digits in range(18):
        candidate = round(end, digits)
        if candidate - start == size:
            return candidate
    return end


def _point_2017(person: Person, joint: int) -> dict[str, Any] | None:
    slot = POSEVAL_FROM_17[joint]
    x, y, v = person.keypoints[slot]
    if v <= 0:
        return None
    point: dict[str, Any] = {"id": [joint], "x": [json_number(x)], "y": [json_number(y)]}
    if person.scores is None or v < 2:
        point["is_visible"] = [1 if v >= 2 else 0]
    if person.scores is not None:
        point["score"] = [json_number(person.scores[slot])]
    return point


def _rect_2017(person: Person) -> dict[str, Any]:
    rect: dict[str, Any] = {}
    if person.head_box is not None:
        box = person.head_box
        corners = (box.x, box.y, _corner(box.x, box.w), _corner(box.y, box.h))
        rect.update(zip(("x1", "y1", "x2", "y2"), ([json_number(v)] for v in corners)))
    if person.score is not None:
        rect["score"] = [json_number(person.score)]
    if person.track_id is not None:
        rect["track_id"] = [int(person.track_id)]
    points = [p for p in (_point_2017(person, k) for k in range(len(POSEVAL_FROM_17))) if p is not None]
    if points:
        rect["annopoints"] = [{"point": points}]
    return jsonio.add_extra(rect, person.extra, _COCO_ANNOTATION_FIELDS)


def dump_2017(video: Video, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The video as a PoseTrack 2017 annolist dict (written to `path` when given).

    One entry per frame of `video.frames` (frames that are not there are not invented), with
    `imgnum` = index + 1 (see the module docstring for files counted from 0 or without imgnum),
    `is_labeled` (left out for prediction-only videos), `ignore_regions` when there are some and
    one annorect per person. A frame without a file name gets no `image`.

    Raises:
        ValueError: a number is NaN/inf.
    """
    base = video.extra.get(IMGNUM_BASE_KEY, 1)
    persons = [p for f in video.frames for p in f.persons]
    # Prediction files (poseval's README layout) have no is_labeled; a video with no human label
    # anywhere is written that way. GT files always get it.
    with_labeled = any(f.is_labeled for f in video.frames) or not all(p.is_prediction for p in persons)
    annolist = []
    for frame in video.frames:
        entry: dict[str, Any] = {} if frame.file_name is None else {"image": [{"name": frame.file_name}]}
        if base is not None:
            entry["imgnum"] = [frame.index + int(base)]
        if with_labeled:
            entry["is_labeled"] = [int(bool(frame.is_labeled))]
        if frame.ignore_regions:
            entry["ignore_regions"] = [
                {
                    "point": [
                        {"x": [json_number(x)], "y": [json_number(y)]}
                        for x, y in np.asarray(r).reshape(-1, 2)
                    ]
                }
                for r in frame.ignore_regions
            ]
        entry["annorect"] = [_rect_2017(p) for p in frame.persons]
        annolist.append(jsonio.add_extra(entry, frame.extra, _COCO_IMAGE_FIELDS))
    out = {"annolist": annolist}
    if path is not None:
        jsonio.write_json(out, path)
    return out
