"""Command lines, `python -m model COMMAND`: `main` (dispatch, logging), `predict` + `predict_input` + `render`, `train`, `checks` (device and output paths, checked first)."""
