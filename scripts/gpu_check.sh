#!/usr/bin/env bash
# GPU check (README "GPU check"): CPU vs CUDA parity of HRNet-W48 and the DCPose head, torchvision's
# DCNv2 on CUDA vs the pure implementation, bf16/fp16 keypoints vs fp32, a short head fine-tuning on
# CUDA (checkpoint loaded on the CPU), throughput; writes one JSON of figures (default gpu_check.json).
# Usage: scripts/gpu_check.sh [OUT.json] [--no-video]     Exit: 0 all passed, 1 a check failed, 2 no CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${1:-gpu_check.json}"
shift || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
# The whole check is bounded to 8 minutes; the gpu-marked tests cover the same parity checks.
timeout 480 "$PY" -m model.bench.gpu_check --out "$OUT" "$@"
