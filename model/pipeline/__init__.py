"""Video pre-annotation: `config` (InferConfig), `predictor` (Predictor, load_head), `video_job` (one call's work), `tracking` and `assignment` (boxes and track ids)."""
