"""Self-blending on a drawn synthetic face: the mask stays on the face, its edge sits on the face outline,
the blend changes only what the mask covers, and blends are labelled fake."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.train import selfblend as sb
from tests.pipeline.train.conftest import synthetic_face


def _signed_distance(polygon: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Per pixel: distance in px to the polygon's edge, positive inside, negative outside."""
    h, w = shape_hw
    contour = polygon.reshape(-1, 1, 2).astype(np.float32)
    out = np.empty((h, w), dtype=np.float64)
    for y in range(h):
        for x in range(w):
            out[y, x] = cv2.pointPolygonTest(contour, (float(x), float(y)), True)
    return out


@pytest.fixture(scope="module")
def face():
    img, marks = synthetic_face()
    poly = sb.face_polygon(marks)
    return img, marks, poly, _signed_distance(poly, img.shape[:2])


def test_polygon_encloses_the_landmarks_and_stays_on_the_face(face):
    img, marks, poly, dist = face
    for x, y in marks:
        assert cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(x), float(y)), False) > 0
    # every polygon vertex lies on the drawn skin ellipse (centre 100, 110; axes 55, 70), or within 10 px
    inside_ellipse = ((poly[:, 0] - 100) / 65) ** 2 + ((poly[:, 1] - 110) / 80) ** 2 <= 1
    assert inside_ellipse.all()


def test_hull_mask_is_the_polygon(face):
    img, _marks, poly, dist = face
    mask = sb.hull_mask(img.shape[:2], poly)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert (mask[dist > 1.5] == 1).all()
    assert (mask[dist < -1.5] == 0).all()
    bigger = sb.hull_mask(img.shape[:2], poly, (1.2, 1.2))
    assert bigger.sum() == pytest.approx(mask.sum() * 1.44, rel=0.05)


@pytest.mark.parametrize("seed", range(12))
def test_random_mask_stays_on_the_face_with_its_edge_at_the_outline(face, seed):
    img, marks, poly, dist = face
    rng = np.random.default_rng(seed)
    mask = sb.random_mask(img.shape[:2], marks, rng)
    assert mask.dtype == np.float32 and mask.shape == img.shape[:2]
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    peak = mask.max()
    assert any(peak == pytest.approx(r, rel=1e-5) for r in sb.BLEND_RATIOS)
    eye_px = float(np.linalg.norm(marks[1] - marks[0]))  # 44 px
    # nothing far outside the outline: hull scale (≤ 10%), elastic wobble and blur are bounded
    assert (mask[dist < -0.35 * eye_px] == 0).all()
    # the middle of the face (nose) is fully blended
    nose_x, nose_y = np.round(marks[2]).astype(int)
    assert mask[nose_y, nose_x] == pytest.approx(peak, rel=1e-3)
    # the soft edge (partial weights) runs along the outline, not across the face
    edge = (mask > 0.05 * peak) & (mask < 0.95 * peak)
    assert edge.any()
    assert np.abs(dist[edge]).max() < 0.6 * eye_px


def test_blend_changes_only_what_the_mask_covers(face):
    img, marks, _poly, _dist = face
    source = np.full_like(img, 255)
    mask = sb.hull_mask(img.shape[:2], sb.face_polygon(marks))
    out = sb.blend(img, source, mask)
    assert (out[mask == 0] == img[mask == 0]).all()
    assert (out[mask == 1] == 255).all()
    half = sb.blend(img, source, mask * 0.5)
    inside = mask == 1
    np.testing.assert_allclose(half[inside], np.rint((img[inside].astype(float) + 255) / 2), atol=1)


@pytest.mark.parametrize("seed", range(6))
def test_self_blend_is_a_fake_that_differs_only_near_the_face(face, seed):
    img, marks, _poly, dist = face
    result = sb.self_blend(img, marks, np.random.default_rng(seed))
    assert result.label == 1
    assert result.image.shape == img.shape and result.image.dtype == np.uint8
    assert result.mask.shape == img.shape[:2]
    outside = result.mask == 0
    # outside the mask the picture is the target: the original, or its colour-jittered copy (one shift)
    changed_outside = (result.image[outside].astype(int) - img[outside].astype(int)).any(axis=1)
    changed_inside = (result.image[~outside].astype(int) - img[~outside].astype(int)).any(axis=1)
    assert changed_inside.mean() > 0.5 or changed_outside.mean() > 0.5
    # the blend is never a no-op, and a fixed seed gives the same blend
    assert (result.image != img).any()
    again = sb.self_blend(img, marks, np.random.default_rng(seed))
    assert (again.image == result.image).all()


def test_soften_keeps_a_solid_core_and_ramps_at_the_edge(face):
    img, _marks, poly, dist = face
    hard = sb.hull_mask(img.shape[:2], poly)
    soft = sb.soften(hard, 9, 15)
    assert soft.max() == pytest.approx(1.0)
    assert (soft[dist > 15] > 0.99).all()  # the core stays solid
    assert (soft[dist < -10] == 0).all()  # the ramp ends just past the outline
    ramp = (soft > 0.1) & (soft < 0.9)
    assert np.abs(dist[ramp]).max() <= 15


def test_bad_image_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        sb.self_blend(np.zeros((10, 10), np.uint8), np.zeros((5, 2)), np.random.default_rng(0))
