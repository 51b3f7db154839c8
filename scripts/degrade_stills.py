"""Real stills as footage gets them, for `bench-real --data`: a copy of a stills folder, every image made grey,
blurred, smeared, noisy, JPEG-compressed, dark, hazy or interlaced.

The real stills are photographs; frames of real footage are rarely as clean: grey (infrared and old cameras),
blurred by motion or focus, noisy in low light, compressed by the codec, dark, flat (fog, haze, a camera's log
profile), interlaced (broadcast archives, decoded with both fields woven into one frame). This script writes a
copy of a folder in the real-stills layout (``annotations/val/*.json`` + ``images/val/<name>/*.jpg``) with one such
change made to every image; the annotations are copied unchanged (no change moves a pixel), and
``python -m model bench-real --data OUT`` scores it as it scores the stills.

- ``grey``: the image's luminance on all three channels;
- ``blur``: Gaussian blur, sigma ``BLUR_SIGMA`` x the image's long side (2.5 px on a 640 px photograph);
- ``smear``: a steady motion's blur (a pan, a shaken camera: `model.deblur.smear`), along a line of ``SMEAR`` x the
  image's long side (19 px on a 640 px photograph) at an angle of each image's own (seeded: the same every run);
- ``noise``: Gaussian noise of ``NOISE_SIGMA`` grey levels per channel (seeded: the same every run);
- ``jpeg``: re-encoded as JPEG of quality ``LOW_JPEG_QUALITY``;
- ``dark``: every pixel value times ``DARK_GAIN``;
- ``haze``: every pixel value times ``HAZE[0]`` plus ``HAZE[1]`` grey levels (a veil: 105..220 left of 0..255);
- ``woven``: the odd rows taken from the image moved ``WOVEN_SHIFT`` px to the right, as a camera panning
  between an interlaced frame's two fields gives them (the even rows, the top field, are the photograph's, so
  the annotations still hold for them).

Every image is then saved as JPEG of quality ``SAVE_QUALITY``.

    python -m scripts.degrade_stills --kind grey --out /tmp/stills-grey
    python -m model bench-real --data /tmp/stills-grey
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from annotation_io import posetrack
from annotation_io.errors import AnnotationFormatError
from annotation_io.types import Box, Frame, Person, Video
from model.bench.real import DEFAULT_DATA, clear_stills_output, load_stills
from model.deblur import smear

BLUR_SIGMA = 2.5 / 640  # x the long side
SMEAR = 0.03  # x the long side: a pan across the frame in half a second, 30 frames a second, half-frame shutter
NOISE_SIGMA = 20.0  # grey levels
LOW_JPEG_QUALITY = 15
DARK_GAIN = 0.3
HAZE = (0.45, 105.0)  # x the picture + grey levels: fog, or a camera's flat log profile
WOVEN_SHIFT = 8  # px between the fields: a pan across a 1920 px frame in about 5 s, 50 fields a second
SAVE_QUALITY = 95


class StillsError(Exception):
    """The source is not a stills folder, an image cannot be read, or --out holds something else."""


def _grey(image: np.ndarray, _seed: int) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _blur(image: np.ndarray, _seed: int) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA * max(image.shape[:2]))


def _smear(image: np.ndarray, seed: int) -> np.ndarray:
    return smear(image, SMEAR * max(image.shape[:2]), smear_angle(seed))


def smear_angle(seed: int) -> float:
    """The smear's angle for an image's seed, degrees in [0, 180)."""
    return float(seed % 180)


def _noise(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, _seed: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, LOW_JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
        raise StillsError("OpenCV could not encode an image as JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _dark(image: np.ndarray, _seed: int) -> np.ndarray:
    return np.clip(image.astype(np.float64) * DARK_GAIN, 0, 255).astype(np.uint8)


def _haze(image: np.ndarray, _seed: int) -> np.ndarray:
    gain, veil = HAZE
    return np.clip(image.astype(np.float64) * gain + veil, 0, 255).astype(np.uint8)


def _woven(image: np.ndarray, _seed: int) -> np.ndarray:
    out = image.copy()
    out[1::2] = np.roll(image, WOVEN_SHIFT, axis=1)[1::2]
    return out


KINDS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "grey": _grey, "blur": _blur, "smear": _smear, "noise": _noise, "jpeg": _jpeg, "dark": _dark, "haze": _haze, "woven": _woven,
}


def degrade(data: Path, out: Path, kind: str) -> int:
    """Writes `data` to `out` (replaced) with every image changed by `kind`; returns the number of images."""
    change = KINDS[kind]
    images = sorted((data / "images").rglob("*.jpg"))
    if not (data / "annotations").is_dir() or not images:
        raise StillsError(f"{data} is not a stills folder (annotations/ and images/**/*.jpg)")
    if not clear_stills_output(out):
        raise StillsError(f"--out {out} exists and holds more than an earlier run's output; give a new folder")
    shutil.copytree(data / "annotations", out / "annotations")
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise StillsError(f"cannot read the image {path}")
        relative = path.relative_to(data)
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        seed = zlib.crc32(relative.as_posix().encode())  # each image its own noise, the same every run
        if not cv2.imwrite(str(target), change(image, seed), [cv2.IMWRITE_JPEG_QUALITY, SAVE_QUALITY]):
            raise StillsError(f"cannot write {target}")
    return len(images)


def folders_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with ``--data`` (a stills folder, default the real stills) and ``--out``, for the scripts that
    write a stills folder made from another."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="stills folder (default ../shared/data/real-stills)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder to write: new, empty, or an earlier run's output (which is replaced)")
    return parser


def read_for_copy(data: Path, out: Path, errors: type[Exception]) -> list[tuple[Video, np.ndarray]]:
    """The stills of `data` (`model.bench.real.load_stills`), read before `out` is cleared for the folder made
    from them. Raises `errors` where `data` is not a stills folder or holds an annotation file that cannot be
    read, or `out` holds more than an earlier run's output (left as it is)."""
    try:
        stills = load_stills(data)
    except FileNotFoundError as exc:
        raise errors(f"{data} is not a stills folder: {exc}") from exc
    except AnnotationFormatError as exc:
        raise errors(f"{data} holds an annotation file this cannot read: {exc}") from exc
    if not clear_stills_output(out):
        raise errors(f"--out {out} exists and holds more than an earlier run's output; give a new folder")
    return stills


def moved_person(person: Person, move: Callable[[np.ndarray], np.ndarray]) -> Person:
    """`person` as an image's pixels moved by `move` show them: `move` takes (N, 2) pixel positions to their new
    places (scaled, shifted or turned by quarter turns); the seen keypoints go through it, and the box and head box
    become the boxes around their moved corners."""
    kps = person.keypoints.copy()
    seen = kps[:, 2] > 0
    kps[seen, :2] = move(kps[seen, :2])
    return replace(person, keypoints=kps, box=_moved_box(person.box, move), head_box=_moved_box(person.head_box, move))


def _moved_box(box: Box | None, move: Callable[[np.ndarray], np.ndarray]) -> Box | None:
    if box is None:
        return None
    corners = move(np.array([[box.x, box.y], [box.x + box.w, box.y + box.h]], float))
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    return Box.from_xyxy(x1, y1, x2, y2)


def moved_frames(video: Video, move: Callable[[np.ndarray], np.ndarray]) -> list[Frame]:
    """`video`'s frames with their people (`moved_person`) and ignore regions moved by `move`."""
    return [replace(frame, persons=[moved_person(p, move) for p in frame.persons],
                    ignore_regions=[move(np.asarray(r, float).reshape(-1, 2)) for r in frame.ignore_regions])
            for frame in video.frames]


def write_still(out: Path, video: Video, image: np.ndarray, errors: type[Exception]) -> None:
    """Writes a one-frame stills `video` with its BGR `image` into the stills folder `out`: the image as JPEG
    (`SAVE_QUALITY`) at its frame's file name, the annotations as ``annotations/val/<name>.json`` with the
    image's size. Raises `errors` where the image cannot be written."""
    target = out / str(video.frames[0].file_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, SAVE_QUALITY]):
        raise errors(f"cannot write {target}")
    (out / "annotations" / "val").mkdir(parents=True, exist_ok=True)
    posetrack.dump_2018(replace(video, width=image.shape[1], height=image.shape[0]),
                        out / "annotations" / "val" / f"{video.name}.json")


def write_folder(args: argparse.Namespace, make: Callable[[], str], errors: type[Exception]) -> int:
    """Runs `make`, which writes ``args.out`` and returns the line to print, unless ``--out`` is ``--data``.
    Returns 0, or 1 with the message on stderr (that refusal, or an `errors` raised by `make`)."""
    if args.out.resolve() == args.data.resolve():
        print("error: --out is the --data folder; give a new folder", file=sys.stderr)
        return 1
    try:
        line = make()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = folders_parser("python -m scripts.degrade_stills", __doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(KINDS), required=True, help="the change made to every image")
    args = parser.parse_args(argv)
    return write_folder(args, lambda: f"{degrade(args.data, args.out, args.kind)} images, {args.kind} -> {args.out}",
                        StillsError)


if __name__ == "__main__":
    raise SystemExit(main())
