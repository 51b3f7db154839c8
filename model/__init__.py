"""PyTorch side of the project: networks, backbones, the video pipeline, head training, command lines.

Map of the package (imports point down this list, never up; `cli`, `bench` and `testing` are imported
by nothing in the product):
- `nets/`: the networks, no I/O: `blocks` (DCNv2, RSB), `hrnet` (HRNet backbone), `dcpose` (PRF, PTM,
  PCN and the DCPose module), `losses`, `runtime` (precision/autocast, channels_last, denormals),
  `yolo_pose` (our implementation of the YOLO11-pose graph), `tfjs_graph` (TensorFlow.js graph models run
  with torch ops).
- `heatmaps`: the heatmap codec and the one home of the target sigma; `transforms`: crop geometry;
  `checkpoint`: our checkpoints, the official DCPose file, bare HRNet state dicts; `device`: whether a
  device is there (the service's DEVICE and the command lines' --device share it); `interlace`: interlaced
  frames' fields aligned where a pan moved them and combed blocks given one field's rows, `denoise`:
  grainy frames filtered, and `deblur`: frames smeared by a pan or a shaken camera deconvolved, before the
  pipeline and the training look at them; `bars`: the picture inside a
  frame's black bars (letterbox, pillarbox) or soft ones (a blurred copy of itself, a flat colour), which
  the detectors and the noise estimate look at.
- `backbones/`: `names` (the one list of backbone names), `base` (the Backbone protocol and the
  per-video hook), `hrnet` and `blazepose_heatmaps` (adapters), `tflite` (bundled mediapipe models run
  through mediapipe's graph bindings), `landmarks` (BlazePose's landmark model on a known box / ROI),
  `blazepose` (BlazePose on person crops), `detectors` (BlazePose's person detector over tiles, HOG),
  `yolo_weights` (where the yolo11_pose weights come from), `yolo_checkpoint` (an Ultralytics `.pt`
  unpickled with an allowlist), `yolo_pose` (the opt-in yolo11_pose backbone), `coco` (COCO-17 keypoints in
  the PoseTrack slots), `movenet_weights` (where the movenet weights are, their digest), `movenet` (the
  MoveNet Thunder backbone, the default where fetched), `centernet` (CenterNet's person boxes, small and
  overlapping people one by one), `movenet_people` (people the detector misses, found by MoveNet's
  person-centre heatmap over tiles and CenterNet's boxes), `factory` (`build_backbone`).
- `pipeline/`: `config` (InferConfig), `predictor` (Predictor, load_head), `boxes` (TrackBox, boxes
  from and carried with keypoints), `video_job` (one call's
  work, given the stages), `read_ahead` (frames decoded ahead on a thread), `tracking` and `assignment`
  (person boxes and track ids), `follow` (detected people followed between detector runs),
  `track_filters` (false short tracks dropped), `smoothing` (one-frame slips of a joint taken out by a
  median over the frames around), `one_per_box` (a box holding another person's pose
  run again with that person painted out), `propagation` (human
  keypoints carried by optical flow and fused with the backbone), `omissions` (joints the labels
  around leave out stay out), `shots` (cuts to another shot found, so that each shot is predicted on its
  own).
- `training/`: `samples`, `heatmap_cache`, `augmentation`, `loop` (train_head), `distributed` (DDP), `curve`.
- `cli/`: `python -m model predict|train|bench|bench-video|bench-real|propagation-overlay` (`main`
  dispatches; `predict`, `predict_input`, `render`, `train`; `checks`: device and output paths checked
  before the slow part).
- `bench/`: `nets` (backbone, head, DCNv2), `head_speed` (head variants vs HRNet-W48 side by side),
  `video` (cached/exact cost, accuracy, with `propagation`'s section), `real` (real stills; `real_score`
  its figures, `real_clips` the stills filmed by a moving camera, `cuts` pairs of them as two shots with a
  cut between),
  `weights` (benchmark weights), `gpu_check` (the GPU check: parity, fine-tuning, throughput;
  `scripts/gpu_check.sh`) and `overlay` (the README's propagation picture).
- `testing/`: test support: a ground-truth backbone that errs like real ones (`simulated`) and a
  direct-loop DCNv2 (`dcn_reference`).

`import model` imports neither torch nor mediapipe.
"""
