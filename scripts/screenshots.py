"""Regenerates the README pictures (docs/*.png) from the browser tests, never by hand.

Runs `tests/backend/test_browser_ls.py` (a real Label Studio 1.23.2 and a real headless Chromium) with
its screenshots sent to a temporary folder, then writes the chosen ones, scaled down, to docs/.

    python -m scripts.screenshots [--out docs] [--width 900] [--from FOLDER_OF_SCREENSHOTS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# test screenshot -> README picture
PICTURES = {
    "01_prediction_before": "ls_prediction_before.png",
    "02_corrected_after": "ls_corrected_after.png",
    "05_card_training_queued": "ls_start_training_card.png",
    "06_data_manager_scores": "ls_data_manager_scores.png",
    "07_status_page_after_training": "status_page.png",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--width", type=int, default=900, help="width of the written PNGs in px")
    parser.add_argument("--from", dest="source", type=Path,
                        help="use the screenshots already in this folder instead of running the test")  # fmt: skip
    args = parser.parse_args(argv)
    if args.source is not None:
        return write(args.source, args.out, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BROWSER_ARTEFACTS_DIR": tmp}
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "slow", "-x",
               "tests/backend/test_browser_ls.py::test_annotator_loop_in_label_studio"]  # fmt: skip
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
            print("the browser test failed: docs/ left as it was", file=sys.stderr)
            return 1
        return write(Path(tmp), args.out, args.width)


def write(source: Path, out: Path, width: int) -> int:
    """Scales the chosen screenshots to `width` and writes them as 256-colour PNGs (small files)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for shot, name in PICTURES.items():
        with Image.open(source / f"{shot}.png") as image:
            height = round(image.height * width / image.width)
            small = image.convert("RGB").resize((width, height), Image.LANCZOS)
            small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out / name, optimize=True)
        print(f"{out / name} ({(out / name).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
