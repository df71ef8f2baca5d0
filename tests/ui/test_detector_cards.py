"""An ensemble on the page: the Detectors card puts each detector's Grad-CAM and P(fake) side by side per
person, and the face gallery shows each detector's overlay beside the fused one."""

from __future__ import annotations

import base64
import io

from PIL import Image

from stream import protocol as p
from tests.ui.test_timeline import JOB, report
from ui import cards
from ui.live import face_gallery


def jpeg_b64(color: tuple[int, int, int], size: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


PROFILE = {"name": "meso-256", "crop_px": 256, "margin_px": 96, "input_px": 256, "resize": "bicubic",
           "scale": 1 / 255, "mean": None, "std": None}  # fmt: skip


def detector(name: str, kind: str, sha: str) -> dict:
    return {"name": name, "sha256": sha * 32, "untrained": False, "device": "cpu", "profile": PROFILE, "detector": kind}


def ensemble_face(track: int) -> p.Face:
    return p.Face(
        face_index=0,
        xyxy=(0.0, 0.0, 50.0, 50.0),
        detector_prob=0.99,
        fake_prob=0.6,
        track_id=track,
        overlay_jpeg_b64=jpeg_b64((200, 0, 0), 160),
        detector_probs=(0.9, 0.3),
        detector_overlays_jpeg_b64=(jpeg_b64((200, 0, 0), 160), jpeg_b64((0, 0, 200), 256)),
    )


def test_the_detectors_card_shows_each_detector_per_person_beside_the_fused_score() -> None:
    r = report(
        detectors=[detector("seed.pth", "seed-irv1", "ab"), detector("Meso4_DF.h5", "mesonet4", "cd")],
        fusion="mean of calibrated P(fake)",
    )
    html = cards.detector_cards(r, {0: ensemble_face(0)})
    assert "Detectors (mean of calibrated P(fake))" in html
    assert "seed.pth" in html and "Meso4_DF.h5" in html and "mesonet4" in html and "cdcdcdcdcdcd…" in html
    row = html[html.index('data-track="0"') :]
    assert row.index("P(fake) 0.90") < row.index("P(fake) 0.30") < row.index("<b>0.60</b>")
    assert row.count("data:image/jpeg;base64,") == 2
    assert cards.detector_cards(report(), {0: ensemble_face(0)}) == ""  # one detector: no card


def test_the_gallery_adds_each_detectors_overlay_with_its_name() -> None:
    frame = p.FrameResult(job_id=JOB, seq=0, index=0, time_s=0.0, score=0.6, faces=(ensemble_face(1),))
    gallery = face_gallery(frame, ("seed.pth", "Meso4_DF.h5"))
    assert [caption for _, caption in gallery] == [
        "Person 2 · 0.60",
        "Person 2 · seed.pth · 0.90",
        "Person 2 · Meso4_DF.h5 · 0.30",
    ]
    assert [image.size for image, _ in gallery] == [(160, 160), (160, 160), (256, 256)]
