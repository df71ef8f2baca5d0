"""Settings: one frozen object, built once at the entry point. The only module that reads os.environ.

Every field can be set from the environment as ``DFF_<FIELD NAME IN CAPITALS>`` (e.g. ``DFF_DEVICE=cpu``,
``DFF_CLASSIFY_BATCH=16``); CLI flags override with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.live_types import LiveOptions
from pipeline.types import ModelInfo, SampleMode, SamplingPolicy, Strategy


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dff"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("local", "ray")
DEFAULT_THRESHOLD = 0.5  # P(fake) at or above which a score means FAKE, when nothing else says


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the service. Units are in the names."""

    # where things live
    data_dir: Path = dataclasses.field(default_factory=_default_data_dir)
    models_dir: Path | None = None  # None = data_dir / "models"
    checkpoint: Path | None = None  # explicit checkpoint; else newest file in models_dir
    # >= 2 checkpoints scored together (pipeline/ensemble.py), overriding checkpoint; DFF_ENSEMBLE=a.h5,b.pth
    ensemble: tuple[Path, ...] = ()
    # compute
    device: str = "auto"  # "auto" = cuda when available, else cpu; or any torch device string
    torch_threads: int = 0  # 0 = leave torch's default
    # Trunk precision (every layer before block8; Grad-CAM's block and the head always run in fp32):
    # "auto" = bf16 on a CPU with native bf16 and on CUDA with bf16, fp16 on older GPUs, else fp32.
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    # sampling
    sample_mode: SampleMode = SampleMode.EVERY_S
    every_s: float = 1.0
    sample_count: int = 16
    max_frames: int | None = 300
    # limits on input
    max_duration_s: float = 3 * 3600.0
    max_image_pixels: int = 50_000_000
    max_upload_mb: float = 500.0
    # detection
    min_face_px: int = 20  # photos: MTCNN's own default, which the seed checkpoint was used with
    video_min_face_px: int = 40  # videos: 4× fewer pyramid pixels per frame than 20, see NOTES.md
    detect_prob_floor: float = 0.90
    detect_max_side_px: int = 640  # videos: detect on a downscaled copy when the long side is larger
    # Photos: detect at full size up to here, so a photo's P(fake) equals the seed recipe's (which ran
    # MTCNN on the full image); a 640-px copy moved boxes by a few pixels and P(fake) by ~0.005.
    photo_detect_max_side_px: int = 2048
    # Videos: a frame larger than detect_max_side_px where the fast pass found nothing, or fewer faces than the
    # frame before, gets a second pass at higher resolution (small faces), on at most about recover_budget of
    # the sampled frames (the rule is in pipeline/faces.py)
    recover_small_faces: bool = True
    recover_budget: float = 0.25  # fraction of a video's sampled frames that may get a recovery pass
    detect_chunk: int = 1  # frames per MTCNN call; 1 is fastest on CPU (NOTES.md), GPUs want more
    # face gates: a detection is a face only if it passes them (rules and measured numbers in pipeline/face_gates.py)
    face_gates: bool = True  # False = every detection over detect_prob_floor is a face and every track a person
    video_face_prob_floor: float = 0.95  # videos (files, live): detector probability floor; photos keep the one above
    face_max_roll_deg: float = 60.0  # |angle of the eye line| at most this
    face_min_eye_frac: float = 0.15  # distance between the eyes / box width, at least ...
    face_max_eye_frac: float = 0.80  # ... and at most
    face_box_pad_frac: float = 0.15  # every landmark inside the box grown by this fraction of its side, each side
    min_track_frames: int = 2  # sampled frames a video's person needs (capped at the frames sampled; photos: 1)
    # classification batching (flush rules in pipeline/batching.py)
    classify_batch: int = 32
    max_pending_frames: int = 4
    # verdict
    strategy: Strategy = Strategy.PER_PERSON
    threshold: float | None = None  # None = the model card's calibrated threshold, else DEFAULT_THRESHOLD
    inconclusive_band: float = 0.05  # |score - threshold| < band -> inconclusive
    min_faces: int = 3  # fewer usable faces in a video -> inconclusive (an image needs 1)
    # serving
    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    keep_uploads: bool = False
    max_jobs: int = 4  # jobs analysed at once (interleaved on one model)
    max_queue: int = 8  # more jobs that may wait (or upload) beyond max_jobs; then clients get "busy"
    allowed_origins: str = ""  # comma-separated browser origins allowed besides the server's own; "*" = any
    shutdown_grace_s: float = 30.0  # on SIGTERM/SIGINT, running jobs get this long to finish
    watch_queue_kib: int = 1024  # messages one client may have queued; then it loses overlays (stream/watchers.py)
    # hostile clients (stream/guard.py, stream/server.py)
    max_jobs_per_client: int = 4  # jobs one client IP may have uploading, waiting or running; 0 = no cap
    min_upload_kib_s: float = 64.0  # after upload_grace_s, byte N must arrive by grace + N / this rate
    upload_grace_s: float = 30.0
    allowed_hosts: str = ""  # Host names served besides loopback and the bound address; "*" = any
    store_busy_timeout_s: float = 10.0  # how long a write waits for a locked database before failing
    # live sources (pipeline/live_types.LiveOptions has the rules; each DFF_LIVE_* sets one of its fields)
    live_rate_hz: float = 2.0
    live_queue_frames: int = 2
    live_open_timeout_s: float = 10.0
    live_read_timeout_s: float = 10.0
    live_reconnects: int = 5
    live_backoff_s: float = 0.5
    live_backoff_max_s: float = 8.0
    live_window_s: float = 30.0
    live_gone_s: float = 10.0
    max_live_jobs: int = 2  # live sessions at once (each holds a decode thread and a share of the model)
    # scale-out (stream/ray_backend.py, stream/store_pg.py): the defaults are the embedded ones
    backend: str = "local"  # "local" = the in-process worker; "ray" = actors on a Ray cluster
    # None = a Ray of its own on this machine (never one found in /tmp/ray); "auto" = the running cluster
    ray_address: str | None = None
    ray_actors: int = 2  # engine actors in the pool (each holds one model)
    ray_actor_cpus: float = 1.0  # CPUs each actor reserves (GPU nodes: one GPU per actor instead)
    # faces of an actor's concurrent jobs share classify+CAM calls: "auto" = on accelerator actors only (on
    # CPU actors bench.ray measured no gain: 4 videos 0.99x, 8 photos 1.08x faster without), "on", "off"
    ray_shared_batches: str = "auto"
    ray_gather_ms: float = 150.0  # how long a job's faces may wait for other jobs' (pipeline/batching.py S2)
    database_url: str | None = None  # None = SQLite under data_dir; "postgresql://user@host/db" = PostgreSQL
    # provenance (pipeline/provenance): a PEM file of C2PA trust anchors; None = no signer is trusted, so a
    # good signature reads "untrusted" (the C2PA trust list is not bundled, and is never fetched)
    c2pa_trust_anchors: Path | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.every_s > 0, f"every_s must be > 0, got {self.every_s}"),
            (
                self.c2pa_trust_anchors is None or self.c2pa_trust_anchors.is_file(),
                f"c2pa_trust_anchors {self.c2pa_trust_anchors} is not a file (a PEM bundle of CA certificates)",
            ),
            (self.sample_count >= 1, f"sample_count must be >= 1, got {self.sample_count}"),
            (self.max_frames is None or self.max_frames >= 1, f"max_frames must be >= 1, got {self.max_frames}"),
            (self.max_duration_s > 0, f"max_duration_s must be > 0, got {self.max_duration_s}"),
            (self.max_image_pixels > 0, f"max_image_pixels must be > 0, got {self.max_image_pixels}"),
            (self.max_upload_mb > 0, f"max_upload_mb must be > 0, got {self.max_upload_mb}"),
            (self.min_face_px >= 10, f"min_face_px must be >= 10, got {self.min_face_px}"),
            (self.video_min_face_px >= 10, f"video_min_face_px must be >= 10, got {self.video_min_face_px}"),
            (0 <= self.detect_prob_floor <= 1, f"detect_prob_floor must be in [0, 1], got {self.detect_prob_floor}"),
            (self.detect_max_side_px >= 64, f"detect_max_side_px must be >= 64, got {self.detect_max_side_px}"),
            (
                self.photo_detect_max_side_px >= 64,
                f"photo_detect_max_side_px must be >= 64, got {self.photo_detect_max_side_px}",
            ),
            (0 <= self.recover_budget <= 1, f"recover_budget must be in [0, 1], got {self.recover_budget}"),
            (self.detect_chunk >= 1, f"detect_chunk must be >= 1, got {self.detect_chunk}"),
            (
                0 <= self.video_face_prob_floor <= 1,
                f"video_face_prob_floor must be in [0, 1], got {self.video_face_prob_floor}",
            ),
            (0 < self.face_max_roll_deg <= 180, f"face_max_roll_deg must be in (0, 180], got {self.face_max_roll_deg}"),
            (
                0 <= self.face_min_eye_frac < self.face_max_eye_frac,
                f"need 0 <= face_min_eye_frac < face_max_eye_frac: {self.face_min_eye_frac}, {self.face_max_eye_frac}",
            ),
            (self.face_box_pad_frac >= 0, f"face_box_pad_frac must be >= 0, got {self.face_box_pad_frac}"),
            (self.min_track_frames >= 1, f"min_track_frames must be >= 1, got {self.min_track_frames}"),
            (self.classify_batch >= 1, f"classify_batch must be >= 1, got {self.classify_batch}"),
            (self.max_pending_frames >= 1, f"max_pending_frames must be >= 1, got {self.max_pending_frames}"),
            (self.threshold is None or 0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}"),
            (0 <= self.inconclusive_band < 0.5, f"inconclusive_band must be in [0, 0.5), got {self.inconclusive_band}"),
            (self.min_faces >= 1, f"min_faces must be >= 1, got {self.min_faces}"),
            (self.torch_threads >= 0, f"torch_threads must be >= 0, got {self.torch_threads}"),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (0 <= self.port <= 65535, f"port must be in 0..65535, got {self.port}"),
            (self.max_jobs >= 1, f"max_jobs must be >= 1, got {self.max_jobs}"),
            (self.max_queue >= 0, f"max_queue must be >= 0, got {self.max_queue}"),
            (self.shutdown_grace_s >= 0, f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}"),
            (self.watch_queue_kib >= 16, f"watch_queue_kib must be >= 16, got {self.watch_queue_kib}"),
            (self.max_jobs_per_client >= 0, f"max_jobs_per_client must be >= 0, got {self.max_jobs_per_client}"),
            (self.min_upload_kib_s > 0, f"min_upload_kib_s must be > 0, got {self.min_upload_kib_s}"),
            (self.upload_grace_s >= 0, f"upload_grace_s must be >= 0, got {self.upload_grace_s}"),
            (self.store_busy_timeout_s >= 0, f"store_busy_timeout_s must be >= 0, got {self.store_busy_timeout_s}"),
        ]
        checks += [
            (self.max_live_jobs >= 0, f"max_live_jobs must be >= 0, got {self.max_live_jobs}"),
            (self.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"),
            (self.ray_actors >= 1, f"ray_actors must be >= 1, got {self.ray_actors}"),
            (self.ray_actor_cpus > 0, f"ray_actor_cpus must be > 0, got {self.ray_actor_cpus}"),
            (self.ray_gather_ms >= 0, f"ray_gather_ms must be >= 0, got {self.ray_gather_ms}"),
            (
                self.ray_shared_batches in ("auto", "on", "off"),
                f"ray_shared_batches must be auto, on or off, got {self.ray_shared_batches!r}",
            ),
            (len(self.ensemble) != 1, f"an ensemble needs 2 or more checkpoints, got {len(self.ensemble)}"),
            (
                not (self.ensemble and self.backend == "ray"),
                "an ensemble runs on the local backend only (the Ray actors are shipped one checkpoint)",
            ),
            (
                self.database_url is None or self.database_url.startswith(("postgresql://", "postgres://")),
                "database_url must be a postgresql:// URL (or unset for SQLite)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            self.live_options()
        except ValueError as err:
            raise ConfigError(f"live settings: {err}") from None

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    def operating_threshold(self, model: ModelInfo, requested: float | None = None) -> tuple[float, str]:
        """The P(fake) threshold an analysis uses and where it came from, first that is set of: the request's,
        these Settings' (``DFF_THRESHOLD``), the model card's calibrated one, 0.5."""
        if requested is not None:
            return requested, "request"
        if self.threshold is not None:
            return self.threshold, "settings"
        if model.calibrated_threshold is not None:
            return model.calibrated_threshold, "model card"
        return DEFAULT_THRESHOLD, "default"

    def live_options(self, rate_hz: float | None = None) -> LiveOptions:
        """The live-source options these settings give (``rate_hz`` overrides ``live_rate_hz``)."""
        return LiveOptions(
            rate_hz=self.live_rate_hz if rate_hz is None else rate_hz,
            queue_frames=self.live_queue_frames,
            open_timeout_s=self.live_open_timeout_s,
            read_timeout_s=self.live_read_timeout_s,
            reconnects=self.live_reconnects,
            backoff_s=self.live_backoff_s,
            backoff_max_s=self.live_backoff_max_s,
            window_s=self.live_window_s,
            gone_s=self.live_gone_s,
            max_pixels=self.max_image_pixels,
        )

    def trust_anchors_pem(self) -> str | None:
        """The C2PA trust anchors' PEM text, or None; ConfigError if the file cannot be read as text."""
        if self.c2pa_trust_anchors is None:
            return None
        try:
            return self.c2pa_trust_anchors.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"c2pa_trust_anchors {self.c2pa_trust_anchors}: {err}") from None

    @property
    def policy(self) -> SamplingPolicy:
        return SamplingPolicy(self.sample_mode, self.every_s, self.sample_count, self.max_frames)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build from ``DFF_*`` variables (``environ`` defaults to os.environ), then apply overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"DFF_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        if "data_dir" not in values and "XDG_DATA_HOME" in env:
            values["data_dir"] = Path(env["XDG_DATA_HOME"]) / "dff"
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, type_name: object, raw: str) -> object:
    """Turn one environment string into the field's type; ConfigError naming the variable if it can't."""
    t = str(type_name)
    try:
        if t.startswith("tuple[Path"):
            return tuple(Path(part.strip()).expanduser() for part in raw.split(",") if part.strip())
        if "Path" in t:
            return Path(raw).expanduser()
        if "SampleMode" in t:
            return SampleMode(raw)
        if "Strategy" in t:
            return Strategy(raw)
        if t.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if t.startswith("int"):
            return None if raw.lower() == "none" else int(raw)
        if t.startswith("float"):
            return float(raw)
        return raw
    except ValueError:
        raise ConfigError(f"DFF_{name.upper()}={raw!r} is not a valid {t}") from None
