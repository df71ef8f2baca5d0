"""Provenance in the analysis: read at open, in ``AnalysisStart`` before the first frame and in the Report,
through the report's JSON and CSV; trust anchors from Settings; hostile metadata never stops an analysis."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import ConfigError
from pipeline.provenance.metadata import XMP_MAX_BYTES
from pipeline.provenance.records import NO_MANIFEST, C2paState
from pipeline.report import report_from_dict, report_to_csv, report_to_dict
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import AnalysisStart, Label, Report
from tests.c2pa_kit import SIGNER, Chain, make_chain, sign, tamper_pixels
from tests.media import face_scene, moving_faces_clip


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu")


@pytest.fixture(scope="module")
def engine(settings: Settings):
    with Engine.open(settings, allow_untrained=True) as engine:
        yield engine


@pytest.fixture(scope="module")
def face_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "face.png"
    Image.fromarray(face_scene(320, 240, [(160, 120, 120)])).save(path)
    return path


def _events(path: Path, engine: Engine, settings: Settings) -> list[object]:
    with open_media_for(path, settings) as source:
        return list(analyze(source, engine, settings))


def test_a_signed_photo_carries_its_credentials_from_the_first_event_to_the_csv(
    tmp_path: Path, face_photo: Path, chain: Chain, engine: Engine, settings: Settings
):
    signed = sign(face_photo, tmp_path / "signed.png", chain)
    events = _events(signed, engine, settings)
    start, report = events[0], events[-1]
    assert isinstance(start, AnalysisStart) and isinstance(report, Report)
    assert start.provenance is not None and start.provenance.c2pa.state is C2paState.UNTRUSTED
    assert report.provenance == start.provenance
    assert report.label is not Label.NO_FACE  # the pixels were analysed as usual, whatever the credentials say

    data = json.loads(json.dumps(report_to_dict(report)))
    section = data["provenance"]
    assert section["schema"] == "dff.provenance/1" and section["c2pa"]["state"] == "untrusted"
    assert section["c2pa"]["manifest"]["signer"] == SIGNER and section["found"] is True
    assert section["summary"] == report.provenance.summary
    assert report_from_dict(data) == report

    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert rows and {r["provenance"] for r in rows} == {report.provenance.summary}


def test_the_three_states_and_the_scores_do_not_depend_on_them(
    tmp_path: Path, face_photo: Path, chain: Chain, engine: Engine, settings: Settings
):
    signed = sign(face_photo, tmp_path / "signed.png", chain)
    tampered = tamper_pixels(signed, tmp_path / "tampered.png")
    reports = {p.name: _events(p, engine, settings)[-1] for p in (face_photo, signed, tampered)}
    states = {name: r.provenance.c2pa.state for name, r in reports.items()}
    assert states == {
        "face.png": C2paState.ABSENT,
        "signed.png": C2paState.UNTRUSTED,
        "tampered.png": C2paState.INVALID,
    }
    assert reports["face.png"].provenance.summary.startswith(NO_MANIFEST)
    assert "INVALID" in reports["tampered.png"].provenance.summary
    assert reports["signed.png"].score == reports["face.png"].score  # same pixels: provenance is not in P(fake)


def test_trust_anchors_come_from_settings(tmp_path: Path, face_photo: Path, chain: Chain, engine: Engine):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(chain.root)
    trusting = Settings(data_dir=tmp_path / "data", device="cpu", c2pa_trust_anchors=anchors)
    signed = sign(face_photo, tmp_path / "signed.png", chain)
    with open_media_for(signed, trusting) as source:
        assert source.provenance is not None and source.provenance.c2pa.state is C2paState.VALID
        assert source.provenance.summary.startswith(f"C2PA valid: signed by {SIGNER}")
    with pytest.raises(ConfigError, match="c2pa_trust_anchors"):
        Settings(c2pa_trust_anchors=tmp_path / "missing.pem")
    assert Settings.from_env({"DFF_C2PA_TRUST_ANCHORS": str(anchors)}).trust_anchors_pem() == chain.root.decode()


def test_a_video_reports_its_container_tags(tmp_path: Path, engine: Engine, settings: Settings):
    clip = moving_faces_clip(tmp_path / "clip.mp4", seconds=1.0, fps=5, n_faces=1)
    report = _events(clip, engine, settings)[-1]
    assert report.provenance is not None and report.provenance.c2pa.state is C2paState.ABSENT
    keys = {(t.source, t.key.lower()) for t in report.provenance.metadata.tags}
    assert ("container", "encoder") in keys, report.provenance.metadata.tags  # PyAV's muxer writes Lavf


def test_hostile_metadata_is_a_section_error_and_the_analysis_goes_on(
    tmp_path: Path, engine: Engine, settings: Settings
):
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>" + "<!--" + "x" * (XMP_MAX_BYTES + 10) + "--></x:xmpmeta>")
    path = tmp_path / "huge_xmp.png"
    Image.fromarray(face_scene(320, 240, [(160, 120, 120)])).save(path, pnginfo=info)
    report = _events(path, engine, settings)[-1]
    assert report.provenance is not None
    assert [e.section for e in report.provenance.metadata.errors] == ["xmp"]
    assert "xmp unreadable" in report.provenance.summary
    assert report.frames and report.label is not Label.NO_FACE


def test_provenance_is_read_only_after_the_size_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Pillow's getexif() decodes a PNG: an image over the pixel cap is refused before anything reads it."""
    import pipeline.sources.file as file_source
    from pipeline.errors import MediaTooLarge
    from pipeline.sources import open_media
    from pipeline.types import SampleMode, SamplingPolicy

    read: list[Path] = []
    monkeypatch.setattr(file_source, "read_provenance", lambda path, **kw: read.append(path))
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 1000), (90, 90, 90)).save(big)
    with pytest.raises(MediaTooLarge):
        open_media(big, SamplingPolicy(SampleMode.EVERY_S), max_image_pixels=1_000_000)
    assert read == []
