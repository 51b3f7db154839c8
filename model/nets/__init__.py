"""The networks, free of I/O: `blocks` (DCNv2, RSB blocks), `hrnet` (HRNet), `dcpose` (PRF, PTM, PCN, DCPose),
`yolo_pose` (YOLO11-pose, the graph of an Ultralytics checkpoint), `tfjs_graph` (a TensorFlow.js graph model
run with torch ops), `losses`, `runtime` (precision/autocast, channels_last, denormals)."""
