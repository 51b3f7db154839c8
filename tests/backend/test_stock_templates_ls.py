"""Label Studio's stock keypoint templates, served for real: /setup accepts them, predictions land in LS.

Three configs as people write them: the structure of Label Studio's keypoint template (KeyPointLabels
only, spelled names, one label that names no joint), the same with person rectangles, and labels
mapped by `predicted_values`. Each runs against the real Label Studio 1.23.2 of `tests.backend.ls_server`
with our backend over HTTP (the simulated predictor): connect (LS calls /setup), "Retrieve
Predictions", then the stored predictions are checked item by item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from annotation_io.label_studio import parse_config
from tests.backend.ls_server import LabelStudioServer, label_studio  # noqa: F401  (pytest fixture)
from tests.backend.test_browser_ls import make_world, start_backend, tear_down

pytestmark = pytest.mark.slow

SPELLED = ["Nose", "Neck", "Head Top", "Left Shoulder", "right-shoulder", "L_Elbow", "R Elbow", "left wrist",
           "RightWrist", "left_hip", "Right Hip", "Left Knee", "knee_r", "Left Ankle", "Right Ankle"]  # fmt: skip
KEYPOINTS_ONLY = ('<View><KeyPointLabels name="kp-1" toName="img-1">'
                  + "".join(f'<Label value="{n}" background="red"/>' for n in SPELLED)
                  + '<Label value="Left Eye" background="blue"/></KeyPointLabels>'
                  '<Image name="img-1" value="$image"/></View>')  # fmt: skip
WITH_BOXES = ('<View><Image name="image" value="$image"/>'
              '<RectangleLabels name="label" toName="image"><Label value="Person"/></RectangleLabels>'
              '<KeyPointLabels name="kp" toName="image">'
              + "".join(f'<Label value="{n}"/>' for n in SPELLED) + "</KeyPointLabels></View>")  # fmt: skip
PREDICTED_VALUES = ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image">'
                    '<Label value="A" predicted_values="left_hip"/><Label value="B" predicted_values="right_hip"/>'
                    '<Label value="C" predicted_values="nose"/></KeyPointLabels></View>')  # fmt: skip


@pytest.mark.parametrize(("xml", "boxes", "joints"), [(KEYPOINTS_ONLY, False, 15), (WITH_BOXES, True, 15),
                                                      (PREDICTED_VALUES, False, 3)], ids=["keypoints-only",
                                                      "with-rectangles", "predicted_values"])  # fmt: skip
def test_stock_template_gets_predictions(
    label_studio: LabelStudioServer, tmp_path: Path, xml: str, boxes: bool, joints: int  # noqa: F811
) -> None:
    client, project, video, task_ids = make_world(label_studio, tmp_path, xml)
    backend = start_backend(label_studio, tmp_path, video)
    config = parse_config(xml)
    try:
        answer = requests.post(f"{backend.url}/setup", json={"project": project, "schema": xml}, timeout=30)
        assert answer.status_code == 200, answer.text
        setup = answer.json()
        assert setup.get("unmapped_labels", []) == (["Left Eye"] if xml is KEYPOINTS_ONLY else []), setup
        ml = client.add_ml_backend(project, backend.url, "dcpose-stock")
        assert ml.get("state") == "CO", f"LS did not connect: {ml}"
        client.dm_action(project, "retrieve_tasks_predictions", task_ids[:2])
        for task in task_ids[:2]:
            (prediction,) = client.get_task(task)["predictions"]
            result: list[dict[str, Any]] = prediction["result"]
            kps = [r for r in result if r["type"] == "keypointlabels"]
            rects = [r for r in result if r["type"] == "rectanglelabels"]
            assert len(kps) == joints and {r["from_name"] for r in kps} == {config.keypoint_from_name}, result
            assert {r["value"]["keypointlabels"][0] for r in kps} == set(config.joint_labels), kps
            assert all(r["to_name"] == config.image_name for r in result)
            if boxes:
                assert len(rects) == 1 and rects[0]["value"]["rectanglelabels"] == ["Person"]
                assert all(r["parentID"] == rects[0]["id"] for r in kps)
            else:
                assert rects == [] and not any("parentID" in r for r in kps), result
    finally:
        tear_down(client, project, backend)
