"""The measurements: decode limit, the pipeline as the service runs it, the classifier alone, peak RSS.

Every function times one thing and returns a small record; ``bench/suite.py`` decides what runs when.
Times are wall seconds from ``time.perf_counter``; memory is in MiB.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from pipeline.batching import score_with_fast_start
from pipeline.classify import preprocess
from pipeline.config import Settings
from pipeline.detect import crop_faces
from pipeline.engine import Engine
from pipeline.faces import source_faces
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import CroppedFrame, FaceBox, FaceScore, FrameVerdict, Report, SampleMode

_KIB_PER_MIB = 1024.0


# -- memory -------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process in MiB (Linux), else None."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / _KIB_PER_MIB


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to the current RSS (Linux >= 4.0); False when unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak RSS in MiB since exec or the last ``reset_peak_rss`` (VmHWM); off Linux ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / _KIB_PER_MIB


@dataclass
class Peak:
    """Filled in by :func:`measure_peak`: the peak RSS (MiB) inside the block; ``resettable`` False means
    the number is the process-wide high-water mark (includes everything run before)."""

    mib: float = math.nan
    resettable: bool = True


@contextmanager
def measure_peak() -> Iterator[Peak]:
    """Peak RSS of the code inside the ``with`` block (MiB)."""
    peak = Peak(resettable=reset_peak_rss())
    try:
        yield peak
    finally:
        peak.mib = peak_rss_mib()


# -- decode limit -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """PyAV decode of a whole file, frame-threaded like the pipeline's sampler (``thread_type AUTO``)."""

    frames: int
    raw_s: float  # decode only
    rgb_s: float  # decode + ``to_ndarray(format="rgb24")`` of every frame

    @property
    def raw_fps(self) -> float:
        return self.frames / self.raw_s if self.raw_s > 0 else 0.0

    @property
    def rgb_fps(self) -> float:
        return self.frames / self.rgb_s if self.rgb_s > 0 else 0.0


def _decode_all(path: Path, convert: bool, thread_type: str = "AUTO") -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        for frame in container.decode(stream):
            if convert:
                frame.to_ndarray(format="rgb24")
            n += 1
    return n, time.perf_counter() - started


def decode_limit(path: Path) -> DecodeResult:
    """Frames/s of decoding ``path`` end to end, without and with RGB conversion."""
    n, raw_s = _decode_all(path, convert=False)
    _, rgb_s = _decode_all(path, convert=True)
    return DecodeResult(frames=n, raw_s=raw_s, rgb_s=rgb_s)


# -- the pipeline ---------------------------------------------------------------------------------------


@dataclass
class PipelineResult:
    """One ``analyze()`` run, consumed as the service does (every event taken as soon as it is yielded)."""

    frames: int = 0
    faces: int = 0
    wall_s: float = 0.0
    first_verdict_s: float | None = None  # analyze() called -> first FrameVerdict in hand
    seconds: dict[str, float] = field(default_factory=dict)  # decode/detect/classify (Report.timings)
    video_s: float = 0.0  # media duration: the seconds of video the run went through
    faces_per_frame: list[int] = field(default_factory=list)
    fake_probs: list[float] = field(default_factory=list)
    label: str = ""  # the verdict (Report.label)
    score: float | None = None  # the verdict's score

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def realtime(self) -> float:
        """Seconds of video per wall second."""
        return self.video_s / self.wall_s if self.wall_s > 0 else 0.0


def mode_settings(settings: Settings, mode: SampleMode, **extra: object) -> Settings:
    """``settings`` with only the sampling changed (``extra``: e.g. ``max_frames=None``)."""
    return dataclasses.replace(settings, sample_mode=mode, **extra)  # type: ignore[arg-type]


def run_pipeline(path: Path, engine: Engine, settings: Settings) -> PipelineResult:
    """Time ``analyze(path, engine, settings)`` end to end and to its first FrameVerdict."""
    result = PipelineResult()
    report: Report | None = None
    started = time.perf_counter()
    with open_media_for(path, settings) as source:
        for event in analyze(source, engine, settings):
            if isinstance(event, FrameVerdict):
                if result.first_verdict_s is None:
                    result.first_verdict_s = time.perf_counter() - started
                result.frames += 1
                result.faces += len(event.faces)
                result.faces_per_frame.append(len(event.faces))
                result.fake_probs.extend(f.fake_prob for f in event.faces)
            elif isinstance(event, Report):
                report = event
    result.wall_s = time.perf_counter() - started
    assert report is not None, "analyze() always ends with a Report"
    t = report.timings
    result.seconds = {"decode": t.decode_s, "detect": t.detect_s, "classify": t.classify_s}
    result.label, result.score = report.label.value, report.score
    result.video_s = report.media.duration_s or (report.frames[-1].time_s if report.frames else 0.0)
    return result


def batch_sizes(faces_per_frame: Sequence[int], settings: Settings) -> list[int]:
    """The classify batch sizes the pipeline used for these frames, replayed through the batcher analyze()
    uses (:func:`pipeline.batching.score_with_fast_start`)."""
    sizes: list[int] = []

    def fake(crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        sizes.append(len(crops))
        z = np.zeros((1, 1), np.float32)
        return [FaceScore(box=b, fake_prob=0.0, heatmap=z, embedding=z[0]) for b in boxes]

    tiny = np.zeros((1, 1, 3), np.uint8)
    frames = (
        CroppedFrame(
            i,
            float(i),
            tuple(FaceBox(i, k, (0.0, 0.0, 1.0, 1.0), 1.0) for k in range(n)),
            (tiny,) * n,
        )
        for i, n in enumerate(faces_per_frame)
    )
    for _ in score_with_fast_start(
        frames, fake, classify_batch=settings.classify_batch, max_pending_frames=settings.max_pending_frames
    ):
        pass
    return sizes


# -- the classifier alone -------------------------------------------------------------------------------


def sample_crops(path: Path, engine: Engine, settings: Settings, n: int) -> list[np.ndarray]:
    """``n`` face crops (crop_px square, uint8 RGB) detected in ``path`` the way the pipeline does it."""
    crops: list[np.ndarray] = []
    with open_media_for(path, mode_settings(settings, SampleMode.ALL)) as source:
        for frame, boxes in source_faces(source, engine.detector, settings):
            crops += crop_faces(frame.image, boxes, engine.info.profile)
            if len(crops) >= n:
                break
    if not crops:
        raise RuntimeError(f"no face found in {path}: the classifier-only run needs crops")
    return [crops[i % len(crops)] for i in range(n)]


@dataclass(frozen=True, slots=True)
class ClassifierResult:
    """Forward passes alone (no CAM, no backward) through the pipeline's own module and layout."""

    batch: int
    faces: int
    wall_s: float

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0


def classifier_only(engine: Engine, crops: Sequence[np.ndarray], batch: int, min_s: float = 2.0) -> ClassifierResult:
    """Faces/s of preprocess + forward at ``batch`` faces per call under ``inference_mode``, on the
    classifier's network as the pipeline runs it (frozen, channels-last, the same trunk precision). Cycles
    through ``crops`` in calls of exactly ``batch`` faces until ``min_s`` seconds have passed (at least one
    pass); one untimed warm-up call first."""
    clf = engine.classifier
    module, profile, device = clf.net, clf.profile, clf.device
    fmt = torch.channels_last if clf.channels_last else torch.contiguous_format
    n = len(crops)
    # every call gets exactly ``batch`` faces, cycling through ``crops``
    batches = [[crops[(i + k) % n] for k in range(batch)] for i in range(0, max(n, batch), batch)]

    def forward(group: Sequence[np.ndarray]) -> None:
        with torch.inference_mode():
            x = preprocess(group, profile, device).contiguous(memory_format=fmt)
            torch.sigmoid(module(x)[:, 0]).float().cpu()

    forward(batches[0])
    faces = 0
    started = time.perf_counter()
    while True:
        for group in batches:
            forward(group)
            faces += len(group)
        if time.perf_counter() - started >= min_s:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return ClassifierResult(batch=batch, faces=faces, wall_s=time.perf_counter() - started)
