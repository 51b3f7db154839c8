#!/usr/bin/env bash
# The image's self-test: `docker run --rm [--gpus all] IMAGE scripts/self_test.sh`.
# CUDA image (DEVICE=cuda): the GPU check (scripts/gpu_check.sh), figures in $DATA_DIR/gpu_check.json.
# CPU image: the DCNv2 parity tests need pytest (TEST_ENV=true); without it, an import check.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${DATA_DIR:-/tmp}/gpu_check.json"
case "${DEVICE:-cpu}" in
  cuda*) exec scripts/gpu_check.sh "$OUT" ;;
  *) python -c "import torch, torchvision.ops; from model.nets.blocks import torchvision_deform_conv2d_available as a; assert a(); print('torch', torch.__version__, 'torchvision ok')"
     if python -c "import pytest" 2>/dev/null; then exec python -m pytest -q -p no:cacheprovider tests/model/nets/test_blocks.py; fi ;;
esac
