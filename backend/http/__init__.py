"""The HTTP surface: Flask Blueprints and the one error mapping (registered by `backend.app.create_app`).

Map:
- `protocol`: Label Studio's ML-backend routes: `/health`, `/setup`, `/predict`, `/webhook`.
- `status`: the status page `/` (HTML, behind basic auth like the API).
- `jobs`: `/preannotate`, `/jobs`, `/jobs/<id>`, `/jobs/<id>/cancel`, `/metrics`.
- `versions`: `/versions`, `/versions/<name>`, `/versions/<name>/curve.png`, `/versions/<name>/promote`, `/train`.
- `ls_model`: `DCPoseBackend`, setup/predict/fit in the shape of label-studio-ml's LabelStudioMLBase.
- `inputs`: reading a request: the context, the JSON body, query integers, LS project ids.
- `errors`: `ApiError` and the mapping of typed exceptions to 4xx/503 JSON answers.
"""
