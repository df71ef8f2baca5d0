"""Classifier + Grad-CAM: seed parity, batch consistency, output contracts and hook lifetime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.classify import FaceClassifier, target_layer
from pipeline.detect import FaceDetector, crop_faces
from pipeline.models import SEED_PROFILE, LoadedModel, build_model, load_model, save_checkpoint
from pipeline.types import FaceBox, FaceScore, Frame, ModelInfo
from tests.media import astronaut, face_scene
from tests.weights import calibrated_model, seed_recipe

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = save_checkpoint(calibrated_model(), tmp_path_factory.mktemp("ckpt") / "calibrated.pth")
    return load_model(path, CPU)


@pytest.fixture(scope="module")
def classifier(loaded: LoadedModel) -> Iterator[FaceClassifier]:
    with FaceClassifier(loaded) as clf:
        yield clf


@pytest.fixture(scope="module")
def faces() -> tuple[list[np.ndarray], list[FaceBox]]:
    """Five different 160-px crops: faces from two scenes, the astronaut, and noise."""
    scene = face_scene(640, 360, [(20, 40, 150), (230, 60, 120), (420, 30, 180)])
    (boxes,) = FaceDetector(CPU).detect([Frame(0, 0.0, scene)])
    crops = crop_faces(scene, boxes, SEED_PROFILE)
    astro_box = FaceBox(1, 0, (181.0, 62.0, 268.0, 172.0), 0.99)
    crops += crop_faces(astronaut(), [astro_box], SEED_PROFILE)
    crops.append(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    return crops, [*boxes, astro_box, FaceBox(2, 0, (0.0, 0.0, 160.0, 160.0), 0.95)]


def test_seed_parity_on_the_astronaut(loaded: LoadedModel, classifier: FaceClassifier) -> None:
    image = astronaut()
    expected = seed_recipe(loaded.module, image)
    # The seed's MTCNN uses facenet-pytorch's default min_face_size=20, which sets its image pyramid;
    # the same pyramid gives the same box, hence the same crop, bit for bit.
    (boxes,) = FaceDetector(CPU, min_face_px=20).detect([Frame(0, 0.0, image)])
    assert len(boxes) == 1
    (score,) = classifier.score(crop_faces(image, boxes, loaded.info.profile), boxes)
    assert abs(score.fake_prob - expected) < 1e-5, (score.fake_prob, expected)
    assert 0.05 < expected < 0.95, "the calibrated model should not saturate"


def test_score_contract(classifier: FaceClassifier, faces: tuple[list[np.ndarray], list[FaceBox]]) -> None:
    crops, boxes = faces
    scores = classifier.score(crops, boxes)
    assert len(scores) == len(crops)
    for score, crop, box in zip(scores, crops, boxes, strict=True):
        assert isinstance(score, FaceScore) and score.box is box and score.crop is crop
        assert isinstance(score.fake_prob, float) and 0.0 <= score.fake_prob <= 1.0
        assert score.heatmap.shape == (256, 256) and score.heatmap.dtype == np.float32
        assert np.isfinite(score.heatmap).all()
        assert score.heatmap.min() >= 0.0 and score.heatmap.max() <= 1.0
        assert score.embedding.shape == (512,) and score.embedding.dtype == np.float32
    assert np.ptp([s.fake_prob for s in scores]) > 1e-3, "different faces should score differently"


def test_batch_equals_one_by_one(classifier: FaceClassifier, faces: tuple[list[np.ndarray], list[FaceBox]]) -> None:
    crops, boxes = faces
    batched = classifier.score(crops, boxes)
    for crop, box, together in zip(crops, boxes, batched, strict=True):
        (alone,) = classifier.score([crop], [box])
        assert abs(alone.fake_prob - together.fake_prob) < 1e-4
        np.testing.assert_allclose(alone.heatmap, together.heatmap, atol=1e-4)
        np.testing.assert_allclose(alone.embedding, together.embedding, atol=1e-4, rtol=1e-4)


def test_empty_and_mismatched_input(classifier: FaceClassifier) -> None:
    assert classifier.score([], []) == []
    crop = np.zeros((160, 160, 3), np.uint8)
    with pytest.raises(ValueError, match="one box per crop"):
        classifier.score([crop], [])
    with pytest.raises(ValueError, match="160×160×3 uint8"):
        classifier.score([np.zeros((128, 128, 3), np.uint8)], [FaceBox(0, 0, (0.0, 0.0, 1.0, 1.0), 1.0)])


def test_works_under_a_callers_no_grad(
    classifier: FaceClassifier, faces: tuple[list[np.ndarray], list[FaceBox]]
) -> None:
    crops, boxes = faces[0][:2], faces[1][:2]
    plain = classifier.score(crops, boxes)
    with torch.no_grad():
        quiet = classifier.score(crops, boxes)
    with torch.inference_mode():
        inferred = classifier.score(crops, boxes)
    for a, b, c in zip(plain, quiet, inferred, strict=True):
        assert a.fake_prob == b.fake_prob == c.fake_prob
        np.testing.assert_array_equal(a.heatmap, b.heatmap)
        np.testing.assert_array_equal(a.heatmap, c.heatmap)


def test_hooks_are_made_once_and_released(loaded: LoadedModel) -> None:
    module = loaded.module
    target = target_layer(module)
    before = (len(target._forward_hooks), len(module.last_bn._forward_hooks))
    crop = crop_faces(astronaut(), [FaceBox(0, 0, (181.0, 62.0, 268.0, 172.0), 0.99)], SEED_PROFILE)
    box = [FaceBox(0, 0, (181.0, 62.0, 268.0, 172.0), 0.99)]
    clf = FaceClassifier(loaded)
    # Frozen outside the target block, so the backward pass stops there.
    assert {n for n, p in module.named_parameters() if p.requires_grad} == {
        f"block8.branch1.2.{n}" for n, _ in target.named_parameters()
    }
    held = (len(target._forward_hooks), len(module.last_bn._forward_hooks))
    assert held == (before[0] + 2, before[1] + 1)  # grad-cam: activation + gradient hooks
    first = clf.score(crop, box)
    second = clf.score(crop, box)
    assert (len(target._forward_hooks), len(module.last_bn._forward_hooks)) == held
    assert clf.hook_count == 3
    assert first[0].fake_prob == second[0].fake_prob
    np.testing.assert_array_equal(first[0].heatmap, second[0].heatmap)
    clf.close()
    clf.close()
    assert clf.hook_count == 0
    assert (len(target._forward_hooks), len(module.last_bn._forward_hooks)) == before
    with pytest.raises(RuntimeError, match="closed"):
        clf.score(crop, box)


def test_all_zero_cam_is_zeros_not_nan() -> None:
    model = build_model().eval()
    layer = target_layer(model)
    with torch.no_grad():  # the target block then outputs relu(0) = 0 everywhere: the CAM is all zero
        for param in layer.parameters():
            param.zero_()
    info = ModelInfo("zero", "zero", SEED_PROFILE, "cpu", untrained=True)
    with FaceClassifier(LoadedModel(model, info)) as clf:
        (score,) = clf.score([np.full((160, 160, 3), 100, np.uint8)], [FaceBox(0, 0, (0.0, 0.0, 9.0, 9.0), 1.0)])
    assert score.heatmap.dtype == np.float32
    assert not np.isnan(score.heatmap).any()
    assert (score.heatmap == 0).all()


def test_channels_last_gives_the_same_scores(
    loaded: LoadedModel, faces: tuple[list[np.ndarray], list[FaceBox]], tmp_path: Path
) -> None:
    crops, boxes = faces[0][:2], faces[1][:2]
    with FaceClassifier(loaded, channels_last=False) as clf:
        plain = clf.score(crops, boxes)
    copy = load_model(save_checkpoint(loaded.module, tmp_path / "copy.pth"), CPU)
    with FaceClassifier(copy, channels_last=True) as clf:
        nhwc = clf.score(crops, boxes)
    for a, b in zip(plain, nhwc, strict=True):
        assert abs(a.fake_prob - b.fake_prob) < 1e-4
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-3)


@pytest.mark.gpu
def test_cuda_matches_cpu(tmp_path: Path, faces: tuple[list[np.ndarray], list[FaceBox]]) -> None:
    path = save_checkpoint(calibrated_model(), tmp_path / "gpu.pth")
    crops, boxes = faces
    with FaceClassifier(load_model(path, CPU)) as clf:
        on_cpu = clf.score(crops, boxes)
    with FaceClassifier(load_model(path, torch.device("cuda"))) as clf:
        on_gpu = clf.score(crops, boxes)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert abs(a.fake_prob - b.fake_prob) < 1e-3
        assert np.abs(a.heatmap - b.heatmap).mean() < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_trunk_stays_close_to_fp32_and_leaves_the_model_alone(
    loaded: LoadedModel, faces: tuple[list[np.ndarray], list[FaceBox]], dtype: torch.dtype
) -> None:
    crops, boxes = faces
    with FaceClassifier(loaded) as clf:
        reference = clf.score(crops, boxes)
    params = {n: p.detach().clone() for n, p in loaded.module.named_parameters()}
    with FaceClassifier(loaded, trunk_dtype=dtype) as clf:
        assert clf.hook_count == 3
        low = clf.score(crops, boxes)
        again = clf.score(crops, boxes)
    for ref, lo, lo2 in zip(reference, low, again, strict=True):
        assert abs(ref.fake_prob - lo.fake_prob) < 5e-3, (dtype, ref.fake_prob, lo.fake_prob)
        # the same map (bf16 measured: r >= 0.994, |Δ| <= 0.13 on the noise crop, <= 0.05 on faces)
        assert np.corrcoef(ref.heatmap.ravel(), lo.heatmap.ravel())[0, 1] > 0.99
        assert np.abs(ref.heatmap - lo.heatmap).max() < 0.2
        cosine = ref.embedding @ lo.embedding / np.linalg.norm(ref.embedding) / np.linalg.norm(lo.embedding)
        assert cosine > 0.999, cosine  # the tracker compares embeddings by cosine
        assert lo.heatmap.dtype == np.float32 and lo.embedding.dtype == np.float32
        assert lo.fake_prob == lo2.fake_prob  # deterministic across calls
    # the shared model is still fp32, unchanged, and frozen only while a classifier is open
    for name, param in loaded.module.named_parameters():
        assert param.dtype == torch.float32 and torch.equal(param, params[name]), name
