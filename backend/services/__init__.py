"""What the service does, as plain functions of a BackendContext (no Flask).

Map:
- `prediction`: frame tasks -> frames, stored labels, task regions -> Predictor -> LS results; logged.
- `events`: webhook intake (validate, record, dedup, queue).
- `event_processing`: background processing of recorded events in batches (read, prepare, one short
  write).
- `training`: submit a "train" job (START_TRAINING and POST /train alike), triggers, the timer, promote.
- `finetune`: the "train" job: samples, head training, candidate version, gate.
- `finetune_config`: the options of a run (defaults, MODEL_DIR/train_config.json, the job's).
- `version_files`: a version's folder (head, config, metrics, curve), its name, written all or nothing.
- `gate`: held-out scoring of candidate and serving versions; promote or reject.
- `preannotate`: the bulk "preannotate" job pushing predictions into Label Studio.
- `training_data`: a project's human-checked frames from the database.
- `corrections`: prediction vs final annotation, joint by joint.
- `ls_sync`: keeps Label Studio's project `model_version` (and the ML backend card's note) in step.
- `status`: what the status page shows (serving versions, gate figures, jobs, acceptance).
"""
