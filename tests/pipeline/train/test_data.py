"""Training data: folder scan, context crops, the face cache, and the split by source file."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.errors import ConfigError
from pipeline.models import SEED_PROFILE
from pipeline.train.data import (
    FAKE,
    REAL,
    FaceCache,
    FaceSample,
    context_crop,
    crop_from,
    load_faces,
    scan_media,
    split_by_source,
)
from pipeline.types import FaceBox, SampleMode, SamplingPolicy
from tests.media import SHARED, astronaut, moving_faces_clip
from tests.pipeline.train.conftest import ASTRO_BOX, ASTRO_LANDMARKS, SHARED_PHOTOS, write_real_photos

POLICY = SamplingPolicy(SampleMode.EVERY_S, every_s=0.5, max_frames=4)


def _faces(sizes: dict[str, int], label: int) -> list[FaceSample]:
    blank = np.zeros((4, 4, 3), np.uint8)
    marks = np.zeros((5, 2), np.float32)
    return [
        FaceSample(blank, (0.0, 0.0, 2.0, 2.0), marks, label, src, f"{src}.mp4", i, 0)
        for src, n in sizes.items()
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_split_never_shares_a_source(seed, fraction):
    rng = np.random.default_rng(seed)
    real = _faces({f"r{i}": int(rng.integers(1, 40)) for i in range(9)}, REAL)
    fake = _faces({f"f{i}": int(rng.integers(1, 40)) for i in range(5)}, FAKE)
    train, val = split_by_source(real + fake, fraction, seed)
    assert len(train) + len(val) == len(real) + len(fake)
    assert not {f.source for f in train} & {f.source for f in val}
    for label in (REAL, FAKE):  # both classes on both sides, near the asked share
        n_val = sum(f.label == label for f in val)
        n_all = sum(f.label == label for f in real + fake)
        assert 0 < n_val < n_all
    assert split_by_source(real + fake, fraction, seed) == (train, val)  # deterministic


def test_split_keeps_a_single_source_label_in_training():
    faces = _faces({"only": 10}, REAL) + _faces({"f1": 3, "f2": 4}, FAKE)
    train, val = split_by_source(faces, 0.3)
    assert all(f.label == FAKE for f in val) and val
    assert sum(f.source == "only" for f in train) == 10
    assert split_by_source(faces, 0.0) == (faces, [])
    with pytest.raises(ConfigError):
        split_by_source(faces, 1.0)


def test_scan_finds_media_recursively_and_skips_the_rest(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("x.JPG", "a/y.mp4", "a/b/z.png", "notes.txt", ".hidden/q.jpg", "a/.w.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in scan_media(tmp_path)] == ["a/b/z.png", "a/y.mp4", "x.JPG"]
    with pytest.raises(ConfigError, match="no images or videos"):
        scan_media(_empty(tmp_path))
    with pytest.raises(ConfigError, match="not a directory"):
        scan_media(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_context_crop_keeps_the_face_centred_and_the_service_crop_equal():
    image = astronaut()
    box = FaceBox(0, 0, ASTRO_BOX, 0.99, ASTRO_LANDMARKS)
    context, box_c, marks = context_crop(image, box, 256)
    assert context.shape == (256, 256, 3) and context.dtype == np.uint8
    cx, cy = (box_c[0] + box_c[2]) / 2, (box_c[1] + box_c[3]) / 2
    assert cx == pytest.approx(128, abs=1) and cy == pytest.approx(128, abs=1)
    assert max(box_c[2] - box_c[0], box_c[3] - box_c[1]) == pytest.approx(256 / 1.6, abs=1)
    assert ((marks > box_c[:2]) & (marks < box_c[2:])).all()
    # the crop cut from the context matches the service's crop from the full frame (resampling aside)
    from pipeline.detect import crop_faces

    direct = crop_faces(image, [box], SEED_PROFILE)[0].astype(float)
    via_context = crop_from(context, box_c, SEED_PROFILE).astype(float)
    assert np.abs(direct - via_context).mean() < 6


def test_context_crop_pads_at_the_frame_edge():
    image = astronaut()
    box = FaceBox(0, 0, (0.0, 0.0, 100.0, 120.0), 0.99, None)
    context, box_c, marks = context_crop(image, box, 192)
    assert context.shape == (192, 192, 3)
    assert marks.shape == (5, 2)


def test_cache_round_trip(tmp_path):
    cache = FaceCache(tmp_path, {"a": 1})
    faces = [(3, 0, np.full((8, 8, 3), 7, np.uint8), (1.0, 2.0, 5.0, 6.0), np.ones((5, 2), np.float32))]
    assert cache.load("ab" * 32) is None
    cache.save("ab" * 32, faces)
    ((frame, face, ctx, box, marks),) = cache.load("ab" * 32)
    assert (frame, face, box) == (3, 0, (1.0, 2.0, 5.0, 6.0))
    assert (ctx == 7).all() and marks.dtype == np.float32
    cache.save("cd" * 32, [])
    assert cache.load("cd" * 32) == []
    assert FaceCache(tmp_path, {"a": 2}).load("ab" * 32) is None  # other parameters, other entry
    assert FaceCache(None, {}).load("ab" * 32) is None


def test_load_faces_from_photos_and_a_video_splits_by_file(tmp_path):
    real = write_real_photos(tmp_path / "real")
    moving_faces_clip(real / "clip.mp4", seconds=2.0, fps=10, n_faces=2)
    settings = Settings(device="cpu")
    made = []

    def detector() -> FaceDetector:
        made.append(1)
        return FaceDetector(torch.device("cpu"), min_face_px=20)

    faces, files = load_faces([(real, REAL)], settings, POLICY, SEED_PROFILE, tmp_path / "cache", detector)
    by_file = {f.path.name: f.n_faces for f in files}
    assert by_file["astronaut.png"] == 1 and by_file["two_faces.jpg"] == 2
    assert by_file["clip.mp4"] >= 6  # 4 sampled frames × 2 faces, MTCNN may miss an edge face
    clip_faces = [f for f in faces if f.name == "clip.mp4"]
    assert len({f.source for f in clip_faces}) == 1 and len({f.frame_index for f in clip_faces}) >= 3
    assert all(f.context.shape == (256, 256, 3) and f.landmarks.shape == (5, 2) for f in faces)
    for seed in range(5):
        train, val = split_by_source(faces, 0.3, seed)
        assert val and not {f.source for f in train} & {f.source for f in val}
        assert not ({f.name for f in train} & {f.name for f in val})
    # the second run reads the cache: no detector is built
    again, _ = load_faces([(real, REAL)], settings, POLICY, SEED_PROFILE, tmp_path / "cache", detector)
    assert len(made) == 1 and len(again) == len(faces)
    assert all((a.context == b.context).all() for a, b in zip(faces, again, strict=True))
    # other face gates or small-face recovery find other faces: the cache is not reused for them
    for changed in (dataclasses.replace(settings, face_gates=False), dataclasses.replace(settings, recover_budget=1.0)):
        load_faces([(real, REAL)], changed, POLICY, SEED_PROFILE, tmp_path / "cache", detector)
    assert len(made) == 3


def test_same_content_under_both_labels_is_refused(tmp_path):
    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(real / "grey.png")
    (fake / "copy.png").write_bytes((real / "grey.png").read_bytes())
    with pytest.raises(ConfigError, match="other label"):
        load_faces(
            [(real, REAL), (fake, FAKE)],
            Settings(device="cpu"),
            POLICY,
            SEED_PROFILE,
            None,
            lambda: FaceDetector(torch.device("cpu"), min_face_px=20),
        )


def test_shared_media_photos_give_faces(tmp_path, shared_available):
    if not shared_available:
        pytest.skip("../shared/media photos not present (they are only on developer machines)")
    real = tmp_path / "real"
    real.mkdir()
    for name in SHARED_PHOTOS:
        shutil.copy(SHARED / "media" / name, real / name)
    faces, files = load_faces(
        [(real, REAL)],
        Settings(device="cpu"),
        POLICY,
        dataclasses.replace(SEED_PROFILE),
        None,
        lambda: FaceDetector(torch.device("cpu"), min_face_px=20),
    )
    by_file = {f.path.name: f.n_faces for f in files}
    assert by_file["obama.jpg"] == 1 and by_file["two_people.jpg"] == 2
