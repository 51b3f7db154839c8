"""Rough pose estimators: crops in, (N, 17, 96, 72) heatmaps out.

- `names`: the backbone names (one Literal); cheap to import.
- `base`: the Backbone protocol, `bind_video` (the per-video hook), crop checks, `file_digest`.
- `hrnet`: HRNet behind the protocol; `blazepose_heatmaps`: BlazePose behind the protocol.
- `blazepose`: mediapipe's bundled BlazePose model on crops, mapped to the 17 PoseTrack slots.
- `detectors`: whole-frame person detectors (iterated BlazePose, OpenCV HOG).
- `factory`: `build_backbone(name, checkpoint, device)`.
"""
