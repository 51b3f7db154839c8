"""Pose annotation formats, video access and evaluation. Imports numpy/json/cv2 only, never torch.

Map:
- `types`: Box, Person, Frame, Video (pixel coordinates, 17-slot PoseTrack order).
- `skeletons`: joint names and the 17 <-> 15 (poseval, Label Studio) index maps.
- `errors`: AnnotationFormatError (file/task + field path).
- `posetrack`: PoseTrack 2018 per-video JSON and 2017 annolist JSON, load/dump.
- `coco`: COCO keypoints JSON, load/dump.
- `label_studio`: labelling config, LS results <-> Persons, validation; `ls_config` (the config XML,
  its parsed form, lenient joint names, frame-task data) and `ls_grouping` (which person a keypoint
  region joins) are its parts.
- `video`: frame count, fps, random access and iteration for video files and frame folders.
- `evaluate`: poseval-compatible AP (`python -m annotation_io.evaluate GT PRED`).
- `synth`: synthetic PoseTrack-style videos (`python -m annotation_io.synth OUT ...`).
- `arguments`: argparse types the command lines of all three packages share (`positive_int`).
"""
