"""An ensemble through the real server: ``accepted`` names the detectors, every ``frame`` face carries each
detector's P(fake) and its own Grad-CAM overlay, and the stored report (HTTP JSON and CSV) is ``done``'s."""

from __future__ import annotations

import base64
import csv
import io

from PIL import Image

from stream import protocol as p
from tests.media import face_scene
from tests.mesonet_h5 import two_detectors
from tests.servers import serving
from tests.stream.conftest import analyze_sync, get_json, http, make_settings


def test_the_server_streams_every_detectors_score_and_overlay(tmp_path) -> None:
    (tmp_path / "models").mkdir()
    seed, meso = two_detectors(tmp_path / "models", seed=4)
    photo = tmp_path / "two.png"
    Image.fromarray(face_scene(640, 480, [(120, 200, 150), (420, 200, 150)])).save(photo)
    settings = make_settings(tmp_path, tmp_path / "models", ensemble=(seed, meso))
    with serving(settings) as served:
        messages = analyze_sync(served.ws, photo, options=p.Options(overlays=True))
        accepted = next(m for m in messages if isinstance(m, p.Accepted))
        assert accepted.model.detectors == ("seed.pth", "Meso4_random.h5")
        assert accepted.model.name == "ensemble(seed.pth + Meso4_random.h5)"
        faces = [f for m in messages if isinstance(m, p.FrameResult) for f in m.faces]
        assert len(faces) == 2
        for face in faces:
            assert len(face.detector_probs) == 2
            assert abs(face.fake_prob - sum(face.detector_probs) / 2) < 1e-12
            sizes = [Image.open(io.BytesIO(base64.b64decode(b))).size for b in face.detector_overlays_jpeg_b64]
            assert sizes == [(160, 160), (256, 256)]  # each detector's Grad-CAM over its own crop
        done = messages[-1]
        assert isinstance(done, p.Done)
        assert [d.detector for d in done.report.detectors] == ["seed-irv1", "mesonet4"]
        status, stored = get_json(f"{served.http}/v1/reports/{done.job_id}")
        assert status == 200 and stored == done.report.to_json()
        status, _, body = http("GET", f"{served.http}/v1/reports/{done.job_id}.csv")
        assert status == 200, body
        header = next(csv.reader(io.StringIO(body.decode())))
        assert header[-2:] == ["fake_prob:seed.pth", "fake_prob:Meso4_random.h5"]
