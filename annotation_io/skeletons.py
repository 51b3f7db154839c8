"""Joint-name lists and index maps: PoseTrack's 17-slot COCO order, poseval's 15 ids, Label Studio's 15 labels."""

from __future__ import annotations

# The 17-slot "PoseTrack COCO order" used by PoseTrack 2018 files, DCPose and HRNet heatmaps
# (the released DCPose code). Slots 3/4 (ears) are never annotated in PoseTrack; models still
# output 17 channels and the ears get target weight 0.
POSETRACK_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "head_bottom",
    "head_top",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(POSETRACK_KEYPOINTS)
KEYPOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(POSETRACK_KEYPOINTS)}

# Slots that are never labelled in PoseTrack (the ears).
UNLABELLED_SLOTS: tuple[int, ...] = (3, 4)
# The 15 slots that carry PoseTrack labels, in 17-slot order.
LABELLED_SLOTS: tuple[int, ...] = tuple(i for i in range(NUM_KEYPOINTS) if i not in UNLABELLED_SLOTS)

# Left/right pairs swapped by a horizontal flip (nose, head_bottom, head_top stay).
FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# PoseTrack 2018 `categories[0].skeleton` (1-based slot pairs, as in the official files).
SKELETON_1BASED: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)
# Limbs for drawing, 0-based, ears excluded (they are never predicted meaningfully).
DRAW_LIMBS: tuple[tuple[int, int], ...] = (
    (2, 1), (1, 0), (1, 5), (1, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)

# poseval's 15 joint ids (the released DCPose code) and their names as poseval prints them.
POSEVAL_JOINTS: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "head_bottom",  # poseval calls id 12 "neck"; DCPose writes its predicted head_bottom there
    "nose",
    "head_top",
)
# poseval id k <- 17-slot index POSEVAL_FROM_17[k] (DCPose's coco2posetrack_ord).
POSEVAL_FROM_17: tuple[int, ...] = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9, 1, 0, 2)
# 17-slot index -> poseval id (None for the ears).
POSEVAL_ID_OF_17: dict[int, int] = {slot: k for k, slot in enumerate(POSEVAL_FROM_17)}

# poseval's table groups: column -> poseval ids averaged.
POSEVAL_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (14, 12, 13),
    "Shoulder": (8, 9),
    "Elbow": (7, 10),
    "Wrist": (6, 11),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}

# Label Studio KeyPointLabels: the 15 PoseTrack joints, `model_index` 0..14 in this order
# (17-slot order without the ears, Label Studio 1.23's payloads).
LS_JOINTS: tuple[str, ...] = tuple(POSETRACK_KEYPOINTS[i] for i in LABELLED_SLOTS)
