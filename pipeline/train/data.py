"""Training data: folders of images and videos -> face samples (cached), split by source file.

Faces are found exactly as the service finds them (``pipeline.faces.source_faces``: its sampling and MTCNN with the same
settings) and each is kept as a *context* crop: a square ``CONTEXT_FACTOR`` times the face box, so that
self-blending and box jitter have real pixels around the face. The crop the model sees is cut from it
with the service's own ``crop_faces``. Extraction runs once per file and parameter set; later runs load
``<cache>/<sha256>-<params>.npz``.

The split is by *source file* (identical files count as one source, by content hash): every face of one
video — every frame, every person track — lands on one side. Splitting frames of one video across train
and validation measures memory of that video, not detection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import Settings
from pipeline.detect import FaceDetector, crop_faces
from pipeline.errors import ConfigError, DecodeError, MediaError
from pipeline.faces import detection_key, source_faces
from pipeline.sources import open_media_for
from pipeline.sources.probe import file_sha256
from pipeline.types import FaceBox, PreprocessProfile, SamplingPolicy

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"})
CONTEXT_FACTOR = 1.6  # context side / face box side: room for blending edges, margins and jitter
CACHE_VERSION = 2  # 2: the key holds the face gates and small-face recovery
REAL, FAKE = 0, 1


@dataclass(frozen=True)
class FaceSample:
    """One detected face with context. ``context``: C×C×3 uint8 RGB; ``box_xyxy`` and ``landmarks`` (5×2
    float32) are in context pixels; ``source`` is the SHA-256 of the file it came from (the split unit)."""

    context: np.ndarray
    box_xyxy: tuple[float, float, float, float]
    landmarks: np.ndarray
    label: int
    source: str
    name: str
    frame_index: int
    face_index: int

    def crop(
        self, profile: PreprocessProfile, shift_xy: tuple[float, float] = (0.0, 0.0), scale: float = 1.0
    ) -> np.ndarray:
        """The crop_px×crop_px×3 uint8 RGB crop the service would make; ``shift_xy`` (fractions of the box
        size) and ``scale`` jitter the box like a detector's frame-to-frame noise."""
        return crop_from(self.context, self.box_xyxy, profile, shift_xy, scale)


@dataclass(frozen=True)
class SourceFile:
    """One scanned file: how many faces it gave (0 = none found, or unreadable: ``error`` says why)."""

    path: Path
    label: int
    sha256: str
    n_faces: int
    error: str | None = None


def crop_from(
    image: np.ndarray,
    box_xyxy: Sequence[float],
    profile: PreprocessProfile,
    shift_xy: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> np.ndarray:
    """``crop_faces`` on one box, optionally moved by ``shift_xy`` × box size and scaled about its centre."""
    x1, y1, x2, y2 = box_xyxy
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + shift_xy[0] * w, (y1 + y2) / 2 + shift_xy[1] * h
    w, h = w * scale, h * scale
    box = FaceBox(0, 0, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1.0)
    return crop_faces(image, [box], profile)[0]


def scan_media(root: Path) -> list[Path]:
    """Every image or video under ``root`` (recursive, hidden entries skipped), sorted by path.

    Raises ConfigError when ``root`` is not a directory or holds no media."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    found = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise ConfigError(f"{root} holds no images or videos ({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
    return found


def context_crop(
    image: np.ndarray, box: FaceBox, context_px: int
) -> tuple[np.ndarray, tuple[float, float, float, float], np.ndarray]:
    """Cut a square of ``CONTEXT_FACTOR`` × the box's long side around the face, pad by reflection where it
    leaves the frame, resize to ``context_px``. Returns (C×C×3 uint8, box in context px, 5×2 landmarks)."""
    x1, y1, x2, y2 = box.xyxy
    side = max(x2 - x1, y2 - y1) * CONTEXT_FACTOR
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    size = max(1, int(np.ceil(side)))
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + size - w, top + size - h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101) if pad else image
    region = padded[top + pad : top + pad + size, left + pad : left + pad + size]
    interp = cv2.INTER_AREA if size > context_px else cv2.INTER_LINEAR
    context = cv2.resize(np.ascontiguousarray(region), (context_px, context_px), interpolation=interp)
    k = context_px / size
    box_c = ((x1 - left) * k, (y1 - top) * k, (x2 - left) * k, (y2 - top) * k)
    marks = box.landmarks if box.landmarks is not None else _landmarks_guess(box)
    marks_c = ((np.asarray(marks, dtype=np.float64) - (left, top)) * k).astype(np.float32)
    return context, box_c, marks_c


def _landmarks_guess(box: FaceBox) -> np.ndarray:
    """Typical MTCNN landmark positions inside a box, for a box that came without landmarks."""
    x1, y1, x2, y2 = box.xyxy
    rel = np.array([[0.32, 0.4], [0.68, 0.4], [0.5, 0.58], [0.36, 0.76], [0.64, 0.76]])
    return np.array([x1, y1]) + rel * np.array([x2 - x1, y2 - y1])


def extract_faces(
    path: Path, detector: FaceDetector, settings: Settings, policy: SamplingPolicy, context_px: int
) -> list[tuple[int, int, np.ndarray, tuple[float, float, float, float], np.ndarray]]:
    """(frame_index, face_index, context, box, landmarks) for every face the service would find in the
    sampled frames of ``path``. A file that breaks mid-stream keeps the faces decoded before the break."""
    out = []
    with open_media_for(path, settings, policy) as source:
        try:
            for frame, boxes in source_faces(source, detector, settings):
                for box in boxes:
                    context, box_c, marks = context_crop(frame.image, box, context_px)
                    out.append((frame.index, box.face_index, context, box_c, marks))
        except DecodeError as err:
            log.warning("%s: %s; keeping %d faces found before that", path.name, err, len(out))
    return out


class FaceCache:
    """Extracted faces on disk, one ``.npz`` per (file content, extraction parameters); None = no cache."""

    def __init__(self, directory: Path | None, params: dict[str, object]) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        text = json.dumps({**params, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)
        self.params_digest = hashlib.sha256(text.encode()).hexdigest()[:12]

    def path_for(self, sha256: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{sha256[:24]}-{self.params_digest}.npz"

    def load(self, sha256: str) -> list | None:
        path = self.path_for(sha256)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return [
                    (int(f), int(i), c, tuple(float(v) for v in b), m)
                    for f, i, c, b, m in zip(
                        z["frames"], z["faces"], z["contexts"], z["boxes"], z["landmarks"], strict=True
                    )
                ]
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable face cache %s: %s", path.name, err)
            return None

    def save(self, sha256: str, faces: list) -> None:
        path = self.path_for(sha256)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(faces)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            frames=np.array([f[0] for f in faces], dtype=np.int64).reshape(n),
            faces=np.array([f[1] for f in faces], dtype=np.int64).reshape(n),
            contexts=np.stack([f[2] for f in faces]) if n else np.zeros((0, 1, 1, 3), np.uint8),
            boxes=np.array([f[3] for f in faces], dtype=np.float64).reshape(n, 4),
            landmarks=np.stack([f[4] for f in faces]) if n else np.zeros((0, 5, 2), np.float32),
        )
        tmp.replace(path)  # atomic: an interrupted run never leaves a half-written cache entry


def load_faces(
    folders: Iterable[tuple[Path, int]],
    settings: Settings,
    policy: SamplingPolicy,
    profile: PreprocessProfile,
    cache_dir: Path | None,
    detector_factory: Callable[[], FaceDetector],
    progress: Callable[[str], None] | None = None,
) -> tuple[list[FaceSample], list[SourceFile]]:
    """Faces of every file in ``folders`` ((directory, label) pairs). Unreadable files are skipped and
    reported in the SourceFile list; the same content under both labels is a ConfigError."""
    context_px = round(profile.crop_px * CONTEXT_FACTOR)
    params = {
        "context_px": context_px,
        "context_factor": CONTEXT_FACTOR,
        "policy": dataclasses.asdict(policy),
        # parameters, gates and recovery as source_faces applies them (frames per MTCNN call included:
        # batched detection may differ in the last bits)
        "detect": detection_key(settings),
    }
    cache = FaceCache(cache_dir, params)
    detector: FaceDetector | None = None
    faces: list[FaceSample] = []
    files: list[SourceFile] = []
    labels_of: dict[str, int] = {}
    for folder, label in folders:
        for path in scan_media(folder):
            sha = file_sha256(path)
            if labels_of.setdefault(sha, label) != label:
                raise ConfigError(f"{path} has the same content as a file with the other label")
            found = cache.load(sha)
            error = None
            if found is None:
                if detector is None:
                    detector = detector_factory()
                try:
                    found = extract_faces(path, detector, settings, policy, context_px)
                except MediaError as err:
                    found, error = [], str(err)
                    log.warning("skipping %s: %s", path, err)
                else:
                    cache.save(sha, found)
            for frame_index, face_index, context, box, marks in found:
                faces.append(FaceSample(context, box, marks, label, sha, path.name, frame_index, face_index))
            files.append(SourceFile(path, label, sha, len(found), error))
            if progress is not None:
                progress(f"{path.name}: {len(found)} faces")
    return faces, files


def split_by_source(
    faces: Sequence[FaceSample], val_fraction: float, seed: int = 0
) -> tuple[list[FaceSample], list[FaceSample]]:
    """(train, validation): whole sources on one side, about ``val_fraction`` of each label's faces in
    validation. A label with a single source stays in training (nothing to hold out)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    val_sources: set[str] = set()
    for label in (REAL, FAKE):
        sizes: dict[str, int] = {}
        for f in faces:
            if f.label == label:
                sizes[f.source] = sizes.get(f.source, 0) + 1
        if len(sizes) < 2 or val_fraction == 0:
            continue
        order = sorted(sizes)
        random.Random(f"{seed}-{label}").shuffle(order)
        target = val_fraction * sum(sizes.values())
        taken = 0
        for source in order[:-1]:  # the last one always trains
            if taken + sizes[source] / 2 <= target:
                val_sources.add(source)
                taken += sizes[source]
        if taken == 0:
            val_sources.add(min(order, key=lambda s: (sizes[s], s)))
    train = [f for f in faces if f.source not in val_sources]
    val = [f for f in faces if f.source in val_sources]
    return train, val
