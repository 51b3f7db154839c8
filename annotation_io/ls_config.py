"""Label Studio labelling config and frame-task data: the XML config, its parsed form, task keys.

One LS task is one video frame; its `data` carries `image`, `video_id`, `frame_index`, `nframes`
(and optionally `fps`): every part of the project reads and writes these keys through this module.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from annotation_io.errors import AnnotationFormatError
from annotation_io.skeletons import KEYPOINT_INDEX, LABELLED_SLOTS, LS_JOINTS

# Joint colours, in LS_JOINTS order, chosen for legibility on video frames and in the Regions list:
# the head neutral (light, mid and dark grey), the LEFT side WARM (yellow, orange, red, pink, crimson, brown from shoulder to
# ankle) and the RIGHT side COOL (cyan, blue, purple, green, lime, teal). Every colour is distinct.
JOINT_COLOURS: tuple[str, ...] = (
    "#bdbdbd", "#757575", "#212121",  # nose, head_bottom, head_top (greys: light, mid, dark)
    "#ffea00", "#00e5ff",  # left / right shoulder
    "#ff9100", "#2979ff",  # elbow
    "#ff1744", "#aa00ff",  # wrist
    "#ff4081", "#00c853",  # hip
    "#c51162", "#76ff03",  # knee
    "#8d6e63", "#006064",  # ankle
)  # fmt: skip
PERSON_COLOUR = "#00aa00"
# Lenient joint-name spellings: "L"/"R" prefixes and a few common aliases of PoseTrack's names.
_SIDE = {"l": "left", "r": "right", "lt": "left", "rt": "right"}
_OTHER_JOINTS = {"left_eye", "right_eye", "left_ear", "right_ear"}  # COCO joints PoseTrack leaves out
_ALIASES = {"neck": "head_bottom", "top_head": "head_top", "head": "head_top", "headtop": "head_top"}


class ConfigError(AnnotationFormatError):
    """A labelling config that this backend cannot serve; the message names what is missing."""


class ImageSize(NamedTuple):
    """Original image size in pixels."""

    width: int
    height: int


@dataclass(frozen=True)
class LabelConfig:
    """The parts of an LS labelling config that pose annotation uses.

    Attributes:
        image_name: name of the <Image> tag (the results' `to_name`).
        image_value: task data key the image URL is read from (`value="$image"` -> "image").
        person_from_name: name of the <RectangleLabels> control holding person boxes; None for a
            keypoints-only config (Label Studio's stock keypoint template): keypoints then carry no
            `parentID` and people are told apart by their region ids.
        person_label: its label value for persons.
        keypoint_from_name: name of the <KeyPointLabels> control.
        joint_labels: keypoint label value -> 17-slot joint index.
        track_from_name: name of the per-region <TextArea>/<Number> holding track ids, if any.
        track_type: result type of that control, "textarea" or "number".
        unmapped: keypoint label values that name no PoseTrack joint (left out of predictions; such
            regions in annotations are skipped).
        other_box_labels: the person control's other label values (e.g. an ignore region): boxes
            with them are not persons and are skipped.
    """

    image_name: str
    image_value: str
    person_from_name: str | None
    person_label: str
    keypoint_from_name: str
    joint_labels: dict[str, int]
    track_from_name: str | None = None
    track_type: str = "textarea"
    unmapped: tuple[str, ...] = ()
    other_box_labels: tuple[str, ...] = ()

    @property
    def slot_labels(self) -> dict[int, str]:
        """17-slot joint index -> keypoint label value."""
        return {slot: label for label, slot in self.joint_labels.items()}

    def role_types(self) -> dict[str, tuple[str, str]]:
        """from_name -> (role "box" | "kp" | "track", expected result type)."""
        roles = {self.person_from_name: ("box", "rectanglelabels")} if self.person_from_name else {}
        roles[self.keypoint_from_name] = ("kp", "keypointlabels")
        if self.track_from_name and self.person_from_name:
            roles[self.track_from_name] = ("track", self.track_type)
        return roles


def label_config(
    *,
    image: str = "image",
    person: str = "person",
    keypoints: str = "kp",
    track: str | None = "track_id",
    colours: Sequence[str] | None = None,
    box_fill_opacity: float = 0.0,
    track_caption: str | None = "Track id",
) -> str:
    """The recommended labelling config (Label Studio 1.23's payloads) as XML.

    The image URL is always read from task data key "image" (see `task_data`). The default look is
    chosen for legibility: an unfilled person box (its fill would tint the joints drawn inside it),
    one distinct colour per joint (`JOINT_COLOURS`: head neutral, left warm, right cool), and the
    track-id field captioned.

    Args:
        image: name of the <Image> tag.
        person: name of the person <RectangleLabels>.
        keypoints: name of the <KeyPointLabels> (15 PoseTrack joints, `model_index` 0..14).
        track: name of the per-region track-id <TextArea>; None leaves it out.
        colours: 15 joint colours in LS_JOINTS order (default `JOINT_COLOURS`).
        box_fill_opacity: fill opacity of the person box, 0 (outline only) to 1.
        track_caption: header shown above the track-id field; None: no caption.

    Raises:
        ConfigError: two tags would share a name, not 15 colours, or an opacity outside 0..1.
    """
    names = [n for n in (image, person, keypoints, track) if n is not None]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"tag names must be distinct and non-empty, got {names}")
    colours = tuple(colours) if colours is not None else JOINT_COLOURS
    if len(colours) != len(LS_JOINTS):
        raise ConfigError(f"need {len(LS_JOINTS)} joint colours (one per joint), got {len(colours)}")
    if not 0.0 <= box_fill_opacity <= 1.0:
        raise ConfigError(f"box_fill_opacity must be in 0..1, got {box_fill_opacity}")
    root = ET.Element("View")
    ET.SubElement(root, "Image", name=image, value="$image", zoom="true", zoomControl="true")
    rect = ET.SubElement(root, "RectangleLabels", name=person, toName=image, strokeWidth="2",
                         fillOpacity=f"{box_fill_opacity:g}")  # fmt: skip
    ET.SubElement(rect, "Label", value="person", background=PERSON_COLOUR)
    kp = ET.SubElement(root, "KeyPointLabels", name=keypoints, toName=image, strokeWidth="1")
    for i, (joint, colour) in enumerate(zip(LS_JOINTS, colours, strict=True)):
        ET.SubElement(kp, "Label", value=joint, model_index=str(i), background=colour)
    if track is not None:
        view = ET.SubElement(root, "View", visibleWhen="region-selected", whenTagName=person)
        if track_caption:
            ET.SubElement(view, "Header", value=track_caption, size="6")
        attrs = {"perRegion": "true", "editable": "true", "maxSubmissions": "1", "rows": "1"}
        ET.SubElement(view, "TextArea", name=track, toName=image, **attrs)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode")


@lru_cache(maxsize=1)
def default_config() -> LabelConfig:
    """`parse_config(label_config())`: what the converters assume when given no config."""
    return parse_config(label_config())


def _targets(el: ET.Element) -> list[str]:
    return [t.strip() for t in (el.get("toName") or "").split(",") if t.strip()]


def parse_config(xml: str) -> LabelConfig:
    """Reads the image, person, keypoint and track-id controls out of an LS labelling config.

    Extra controls (Choices, a comment TextArea, a KeyPointLabels whose labels name no joint, a
    RectangleLabels without a person label) are left alone; their results are ignored.

    Raises:
        ConfigError: invalid XML, or a missing, unusable or ambiguous control (the message says which).
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(f"label config is not valid XML: {exc}") from exc
    images = {el.get("name"): el.get("value") or "" for el in root.iter("Image") if el.get("name")}
    kp, (joints, unmapped) = _keypoint_control(root, images)
    on_images = [t for t in _targets(kp) if t in images]
    if len(on_images) > 1:
        raise ConfigError(f"<KeyPointLabels name={kp.get('name')!r}> is bound to several images ({', '.join(on_images)}): "
                          "one task is one frame, with one <Image>")  # fmt: skip
    image_name = on_images[0]
    if not images[image_name].startswith("$"):
        raise ConfigError(f"<Image name={image_name!r}> has no value=\"$key\" naming its task data key")
    rect, person_label = _person_control(root, image_name)
    track = None if rect is None else _track_control(root, image_name, str(rect.get("name")))
    return LabelConfig(
        image_name=image_name,
        image_value=images[image_name][1:],
        person_from_name=None if rect is None else str(rect.get("name")),
        person_label=str(person_label),
        keypoint_from_name=str(kp.get("name")),
        joint_labels=joints,
        track_from_name=None if track is None else track.get("name"),
        track_type="number" if track is not None and track.tag == "Number" else "textarea",
        unmapped=unmapped,
        other_box_labels=() if rect is None else tuple(
            str(el.get("value")) for el in rect.iter("Label") if el.get("value") and el.get("value") != person_label
        ),
    )


def _keypoint_control(root: ET.Element, images: dict[str, str]) -> tuple[ET.Element, tuple[dict[str, int], tuple[str, ...]]]:
    """The one <KeyPointLabels> on an <Image> whose labels name joints, with its (joint labels, unmapped labels).

    A second one whose labels name no joint (prompts, face points) is left alone; two that both name
    joints are refused: results of the other would be ignored, and its joints lost.

    Raises:
        ConfigError: none bound to an image, or two naming joints.
    """
    controls = [el for el in root.iter("KeyPointLabels") if set(_targets(el)) & images.keys() and el.get("name")]
    if not controls:
        raise ConfigError("no <KeyPointLabels> bound to an <Image> (its toName must name an <Image> tag)")
    mapped, first_error = [], None
    for el in controls:
        try:
            mapped.append((el, _joint_labels(el)))
        except ConfigError as exc:
            first_error = first_error or exc
    if len(mapped) > 1:
        named = "; ".join(f"{el.get('name')!r} ({', '.join(labels)})" for el, (labels, _) in mapped)
        raise ConfigError(f"{len(mapped)} <KeyPointLabels> name joints: {named}; this backend reads one: put every joint "
                          "label in one <KeyPointLabels>")  # fmt: skip
    if not mapped:
        raise first_error or ConfigError("no <KeyPointLabels> label names a joint")
    return mapped[0]


def _person_control(root: ET.Element, image_name: str) -> tuple[ET.Element | None, str]:
    """The <RectangleLabels> on the image holding person boxes (None: keypoints-only), and its person label.

    The control with a 'person' label (any case) wins; without one, a lone control with a lone label.

    Raises:
        ConfigError: several controls with a person label, or none of several has one.
    """
    rects = [el for el in root.iter("RectangleLabels") if image_name in _targets(el) and el.get("name")]
    found = []
    for rect in rects:
        labels = [str(el.get("value")) for el in rect.iter("Label") if el.get("value")]
        person = next((v for v in labels if v.lower() == "person"), None)
        if person is not None:
            found.append((rect, person))
    if len(found) > 1:
        names = ", ".join(repr(r.get("name")) for r, _ in found)
        raise ConfigError(f"several <RectangleLabels> have a 'person' label ({names}); person boxes need one control")
    if found:
        return found[0]
    if not rects:
        return None, "person"
    labels = [str(el.get("value")) for el in rects[0].iter("Label") if el.get("value")]
    if len(rects) == 1 and len(labels) == 1:
        return rects[0], labels[0]
    if len(rects) == 1:
        raise ConfigError(f"<RectangleLabels name={rects[0].get('name')!r}> has no 'person' label: {labels}")
    names = ", ".join(repr(r.get("name")) for r in rects)
    raise ConfigError(f"no <RectangleLabels> on {image_name!r} has a 'person' label ({names}): which holds persons?")


def _track_control(root: ET.Element, image_name: str, person: str) -> ET.Element | None:
    """The per-region <TextArea>/<Number> holding person boxes' track ids, if any.

    One shown only for another control's regions (inside a View with whenTagName naming that control,
    e.g. a note per keypoint) is not a track id. Of several left, the one whose name has "track".

    Raises:
        ConfigError: several candidates and no single one named like a track id.
    """
    parents = {child: parent for parent in root.iter() for child in parent}

    def shown_for_others(el: ET.Element) -> bool:
        while el in parents:
            el = parents[el]
            tag = el.get("whenTagName")
            if tag is not None and tag != person:
                return True
        return False

    candidates = [el for el in root.iter() if el.tag in ("TextArea", "Number") and el.get("perRegion") == "true"
                  and image_name in _targets(el) and el.get("name") and not shown_for_others(el)]  # fmt: skip
    if len(candidates) > 1:
        named = [el for el in candidates if "track" in str(el.get("name")).lower()]
        if len(named) != 1:
            names = ", ".join(repr(el.get("name")) for el in candidates)
            raise ConfigError(f"several per-region <TextArea>/<Number> could hold the track id ({names}): name the "
                              "track id's one with 'track' (e.g. track_id), or show the others only for other "
                              "regions (whenTagName)")  # fmt: skip
        candidates = named
    return candidates[0] if candidates else None


def _spelled(name: str) -> str | None:
    """A label's words, lower case, side first, joined by "_" ("Shoulder L" -> "left_shoulder"); None if empty."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name.strip())
    words = [w for w in re.split(r"[\s_\-.]+", spaced.lower()) if w]
    if not words:
        return None
    words = [_SIDE.get(w, w) if i in (0, len(words) - 1) and len(words) > 1 else w for i, w in enumerate(words)]
    if words[-1] in ("left", "right") and len(words) > 1:
        words = [words[-1], *words[:-1]]
    return "_".join(words)


def joint_of_name(name: str) -> str | None:
    """The PoseTrack joint a label spells, leniently; None when it names none.

    Case, spaces, hyphens and underscores do not matter, and "L"/"R" (or "Lt"/"Rt") stand for
    "left"/"right" as a prefix or suffix: `Left Shoulder`, `left-shoulder`, `L_Shoulder`,
    `shoulder_l` and `LeftShoulder`-style camel case all give "left_shoulder". "neck" is head_bottom.
    """
    joined = _spelled(name)
    if joined in LS_JOINTS:
        return joined
    return _ALIASES.get(joined or "")


def _names_other_joint(name: str) -> bool:
    """Whether a label names a body point PoseTrack does not label (COCO's eyes and ears)."""
    return _spelled(name) in _OTHER_JOINTS


def _joint_labels(kp: ET.Element) -> tuple[dict[str, int], tuple[str, ...]]:
    """(label value -> 17-slot index, label values that name no joint).

    A label maps by what it says first: the first joint name among its `predicted_values`
    (comma-separated) and its own value (`joint_of_name`); what the annotator reads is what the
    correction is stored against. Only a label naming no joint maps by `model_index` (index into
    LS_JOINTS): LS's YOLO keypoint configs number labels in COCO's 17-joint order
    (`left_shoulder` model_index="5" is not LS_JOINTS[5], left_elbow). A label naming a joint
    PoseTrack does not label (eye, ear) is unmapped, whatever its model_index.

    Raises:
        ConfigError: a label without value, a bad model_index on a label naming no joint, two labels
            for one joint, or no label that maps to a joint.
    """
    labels: dict[str, int] = {}
    unknown: list[str] = []
    for el in kp.iter("Label"):
        value = el.get("value")
        if not value:
            raise ConfigError(f"a <Label> of <KeyPointLabels name={kp.get('name')!r}> has no value")
        spellings = [v for v in (el.get("predicted_values") or "").split(",") if v.strip()] + [value]
        joint = next((j for j in map(joint_of_name, spellings) if j is not None), None)
        index = el.get("model_index")
        if joint is not None:
            slot = KEYPOINT_INDEX[joint]
        elif index is not None and not any(_names_other_joint(v) for v in spellings):
            if not index.strip().isdigit() or int(index) >= len(LS_JOINTS):
                last = len(LS_JOINTS) - 1
                raise ConfigError(f"joint label {value!r}: model_index={index!r} is not in 0..{last}")
            slot = LABELLED_SLOTS[int(index)]
        else:
            unknown.append(value)
            continue
        if slot in labels.values():
            raise ConfigError(f"joint label {value!r} maps to the same joint as another label (slot {slot})")
        labels[value] = slot
    if not labels:
        if unknown:
            raise ConfigError(
                f"no keypoint label names a PoseTrack joint: {', '.join(unknown)} (expected joint names such "
                f"as {', '.join(LS_JOINTS)}, spelled in any case with spaces, hyphens or L/R, or a "
                "model_index / predicted_values attribute)"
            )
        raise ConfigError(f"<KeyPointLabels name={kp.get('name')!r}> has no <Label>")
    return labels, tuple(unknown)


# ----------------------------------------------------------------------------- task data


@dataclass(frozen=True)
class FrameTask:
    """One LS task = one video frame (the task `data` keys every part of the project uses)."""

    image: str
    video_id: str
    frame_index: int
    nframes: int
    fps: float | None = None
    task_id: int | None = None

    def to_data(self) -> dict[str, Any]:
        return task_data(self.image, self.video_id, self.frame_index, self.nframes, self.fps)


def task_data(
    image_url: str, video_id: str, frame_index: int, nframes: int, fps: float | None = None
) -> dict[str, Any]:
    """The `data` of a frame task: image URL, video id, 0-based frame index, frame count, fps.

    Raises:
        AnnotationFormatError: a value of the wrong type or range.
    """
    data: dict[str, Any] = {"image": image_url, "video_id": video_id, "frame_index": frame_index}
    data["nframes"] = nframes
    if fps is not None:
        data["fps"] = fps
    parse_task({"data": data})
    return data


def parse_task(task: dict) -> FrameTask:
    """Reads a frame task: an LS task `{"id", "data": {...}}` or its bare `data` dict.

    Raises:
        AnnotationFormatError: a key is missing or has the wrong type/range (names task id and key).
    """
    if not isinstance(task, dict):
        raise AnnotationFormatError(f"a task must be a JSON object, got {type(task).__name__}")
    task_id = task.get("id")
    data = task.get("data", task)
    source = f"task {task_id}" if task_id is not None else None

    def bad(key: str, why: str) -> AnnotationFormatError:
        return AnnotationFormatError(why, source=source, where=f"data.{key}")

    if not isinstance(data, dict):
        raise AnnotationFormatError("task data must be a JSON object", source=source, where="data")
    for key in ("image", "video_id", "frame_index", "nframes"):
        if key not in data:
            raise bad(key, "missing (frame tasks need image, video_id, frame_index, nframes)")
    image, video_id = data["image"], data["video_id"]
    if not isinstance(image, str) or not image:
        raise bad("image", f"must be a non-empty URL string, got {image!r}")
    if isinstance(video_id, bool) or not isinstance(video_id, (str, int)) or video_id == "":
        raise bad("video_id", f"must be a non-empty string, got {video_id!r}")
    frame_index, nframes = _integer(data["frame_index"]), _integer(data["nframes"])
    if frame_index is None or frame_index < 0:
        raise bad("frame_index", f"must be an integer >= 0, got {data['frame_index']!r}")
    if nframes is None or nframes <= frame_index:
        raise bad("nframes", f"must be an integer > frame_index ({frame_index}), got {data['nframes']!r}")
    fps = data.get("fps")
    if fps is not None and (not _is_number(fps) or not fps > 0):
        raise bad("fps", f"must be a positive number or absent, got {fps!r}")
    return FrameTask(
        image=image,
        video_id=str(video_id),
        frame_index=frame_index,
        nframes=nframes,
        fps=None if fps is None else float(fps),
        task_id=_integer(task_id),
    )


def _is_number(v: Any) -> bool:
    """v is a finite JSON number (an integer too large for a double, 10**400, is not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _integer(v: Any) -> int | None:
    """v as an int when it is an integral number (JSON may write 3.0), else None."""
    if _is_number(v) and float(v).is_integer():
        return int(v)
    return None
