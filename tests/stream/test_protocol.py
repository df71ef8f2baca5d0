"""The wire format: round trips, rejections (parameter tables), the checked-in schema, and that the
protocol mirrors the pipeline's records without importing them."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from pipeline import errors as pipeline_errors
from pipeline.report import SCHEMA as REPORT_SCHEMA
from pipeline.types import MediaInfo, SampleMode, SamplingPolicy, Strategy
from stream import protocol as p

JOB = "AbCdEfGh12345678_-xyzQ"
MODEL = p.ModelSummary(name="seed.pth", sha256="ab" * 32, device="cpu", untrained=False)
MEDIA = p.Media("clip.mp4", 1234, "cd" * 32, "mov,mp4", "h264", 640, 360, 30.0, 2.0, 0, False, 60)
FACE = p.Face(0, (1.0, 2.0, 50.5, 60.0), 0.99, 0.75, 3, base64.b64encode(b"\xff\xd8jpeg").decode())
PROFILE = p.Profile("facenet-vggface2", 160, 14, 160, "bilinear", 1 / 128, (127.5,) * 3, (128.0,) * 3)
REPORT_MODEL = p.ReportModel("seed.pth", "ab" * 32, PROFILE, "cpu", False, card_name="sbi", temperature=1.5)
FACE_ROW = p.FaceRow(0, (1.0, 2.0, 50.5, 60.0), 0.99, 0.75, 3)
FRAME_ROWS = (p.FrameRow(30, 1.0, 0.75, (FACE_ROW,)), p.FrameRow(60, 2.0, None, ()))
TRACK = p.Track(3, (30,), 1.0, 1.0, (0.75,), 0.75, "inconclusive", confident_fake=False)
SEGMENTS = (p.Segment(1.0, 1.0, 1.0, 0.75, 1), p.Segment(1.0, 1.0, 1.0, 0.75, 1, track_id=3))
REPORT = p.Report(
    schema=REPORT_SCHEMA,
    media=MEDIA,
    policy=p.Policy("every_s", 1.0, 16, 300),
    model=REPORT_MODEL,
    strategy="per_person",
    threshold=0.5,
    score=0.75,
    label="fake",
    frames=FRAME_ROWS,
    tracks=(TRACK,),
    segments=SEGMENTS,
    timings=p.Timings(0.1, 0.2, 0.3, 0.7),
    version="0.1.0",
    summary=p.Summary(2, 1, 1, 1, False),
    threshold_source="model card",
)

TAG = p.MetadataTag(
    "xmp", "DigitalSourceType", "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
)
PROVENANCE = p.Provenance(
    "dff.provenance/1",
    "C2PA INVALID (assertion.dataHash.mismatch): signed by Signer (Org), changed or forged since",
    True,
    p.C2paResult(
        "invalid",
        p.C2paManifest(
            "urn:c2pa:1",
            "dff-test 1.0",
            "t.jpg",
            "Signer",
            "Org",
            None,
            "Es256",
            (p.C2paAction("c2pa.created", TAG.value, "Gen 2", None),),
            (p.C2paIngredient("parent.jpg", "parentOf", "image/jpeg"),),
        ),
        (p.C2paStatus("assertion.dataHash.mismatch", "hashes do not match"),),
        1,
    ),
    p.ProvenanceMetadata((TAG,), (p.MetadataFlag("generator_source_type", "made by an algorithm", (TAG,)),), ()),
)
UNSIGNED = p.Provenance(
    "dff.provenance/1",
    "no C2PA manifest",
    True,
    p.C2paResult("absent", None),
    p.ProvenanceMetadata((), (), (p.SectionError("xmp", "ValueError: too big"),)),
)
MESSAGES = [
    p.Start(name="clip.mp4", size_bytes=1234),
    p.Start(name="a b/ç.mov", size_bytes=0, options=p.Options("count", None, 8, 100, "mean", 0.4, True)),
    p.Attach(job_id=JOB),
    p.Hello(server_version="0.1.0", status="ready", model=MODEL, max_upload_bytes=10, max_message_bytes=4),
    p.Hello(server_version="0.1.0", status="no_model", model=None, max_upload_bytes=0, max_message_bytes=1),
    p.Progress(JOB, "uploading", 0, None),
    p.Progress(JOB, "queued", 0, None, 2),
    p.Progress(JOB, "analyzing", 0, 60),
    p.Accepted(JOB, MEDIA, 60, p.Policy("every_s", 1.0, 16, 300), "per_person", 0.5, True, MODEL),
    p.Accepted(JOB, MEDIA, 1, p.Policy("every_s", 1.0, 16, 300), "mean", 0.5, True, MODEL, provenance=PROVENANCE),
    p.Accepted(JOB, MEDIA, 60, p.Policy("count", 1.0, 8, 8), "mean", 0.7, True, MODEL, "request", 0.1),
    p.Accepted(
        JOB,
        dataclasses.replace(MEDIA, fps=None, duration_s=None, frame_count=None),
        None,
        p.Policy("all", 1.0, 16, None),
        "mean",
        0.5,
        False,
        dataclasses.replace(MODEL, sha256="untrained"),
    ),
    p.FrameResult(JOB, 0, 30, 1.0, 0.75, (FACE, dataclasses.replace(FACE, face_index=1, overlay_jpeg_b64=None))),
    p.FrameResult(JOB, 1, 60, 2.0, None, ()),
    p.Done(JOB, REPORT),
    p.Done(JOB, dataclasses.replace(REPORT, score=None, label="no_face", frames=(), tracks=(), segments=())),
    p.Error(code="busy", message="try later"),
    p.Watch(url="rtsp://127.0.0.1:8554/cam", options=p.Options(rate_hz=2.0, overlays=True)),
    p.Watch(url="http://127.0.0.1/live/index.m3u8"),
    p.Push(name="webcam", options=p.Options(rate_hz=4.0)),
    p.Stop(),
    p.Notice(JOB, "connected", "rtsp://127.0.0.1:8554/cam: h264 1280×720"),
    p.Notice(JOB, "reconnecting", "connection refused", 2, 5, 1.0),
    p.LiveStatus(
        JOB,
        3,
        0.4,
        (p.Person(0, 0.0, 1.5, 4, 4, 0.2, "real", False), p.Person(2, 1.0, 1.5, 2, 2, None, "no_face", False)),
        p.LiveCounters(40, 4, 1, 3, 0),
    ),
    p.Done(
        JOB,
        dataclasses.replace(
            REPORT,
            media=dataclasses.replace(MEDIA, size_bytes=None, sha256=None, kind="live"),
            frames=(),
            session=p.Session(1.7e9, 1.7e9 + 60, "stopped", None, p.LiveCounters(1500, 120, 3, 117, 1), 117, 0.3, 0.6),
        ),
    ),
    p.Error(code="unsupported_media", message="not a video", job_id=JOB),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE)
def test_round_trip(message):
    text = p.encode(message)
    data = json.loads(text)
    assert list(data)[:2] == ["type", "v"] and data["v"] == p.PROTOCOL_VERSION
    assert p.decode(text) == message
    assert p.decode(text.encode()) == message  # bytes work too


def test_lists_become_tuples_and_ints_floats():
    face = p.Face(0, [1, 2, 3, 4], 1, 0, 0)
    assert face.xyxy == (1.0, 2.0, 3.0, 4.0) and isinstance(face.detector_prob, float)


def test_omitted_optional_fields_take_defaults():
    start = p.decode('{"type":"start","v":2,"name":"x.mp4","size_bytes":5}')
    assert start == p.Start(name="x.mp4", size_bytes=5, options=p.Options())
    assert p.decode('{"type":"error","v":2,"code":"busy","message":"m"}').job_id is None


def _start(**options) -> str:
    return json.dumps({"type": "start", "v": 2, "name": "x.mp4", "size_bytes": 5, "options": options})


REJECTED = [
    ("{", "bad_json"),
    ("", "bad_json"),
    (b"\xff\xfe", "bad_json"),
    ('{"type":"start","v":2,"name":"x","size_bytes":NaN}', "bad_json"),
    ("[1, 2]", "bad_message"),
    ('"start"', "bad_message"),
    ('{"type":"start","name":"x.mp4","size_bytes":5}', "bad_version"),
    ('{"type":"start","v":1,"name":"x.mp4","size_bytes":5}', "bad_version"),  # v1: before live sessions
    ('{"type":"start","v":"1","name":"x.mp4","size_bytes":5}', "bad_version"),
    ('{"type":"start","v":true,"name":"x.mp4","size_bytes":5}', "bad_version"),
    ('{"v":2,"name":"x.mp4"}', "unknown_type"),
    ('{"type":"pause","v":2}', "unknown_type"),
    ('{"type":7,"v":2}', "unknown_type"),
    ('{"type":"start","v":2,"size_bytes":5}', "bad_message"),  # missing name
    ('{"type":"start","v":2,"name":"x","size_bytes":5,"extra":1}', "bad_message"),
    ('{"type":"start","v":2,"name":"","size_bytes":5}', "bad_message"),
    ('{"type":"start","v":2,"name":"x","size_bytes":-1}', "bad_message"),
    ('{"type":"start","v":2,"name":"x","size_bytes":1.5}', "bad_message"),
    ('{"type":"start","v":2,"name":"x","size_bytes":true}', "bad_message"),
    ('{"type":"start","v":2,"name":"x","size_bytes":"5"}', "bad_message"),
    ('{"type":"start","v":2,"name":"x","size_bytes":5,"options":[]}', "bad_message"),
    (_start(every_sec=1), "bad_message"),  # a typo is an error, not a silently ignored option
    (_start(every_s=0), "bad_message"),
    (_start(every_s=-1), "bad_message"),
    (_start(count=0), "bad_message"),
    (_start(max_frames=0), "bad_message"),
    (_start(threshold=1.0), "bad_message"),
    (_start(threshold=0), "bad_message"),
    (_start(sample_mode="sometimes"), "bad_message"),
    (_start(strategy="vote"), "bad_message"),
    (_start(overlays="yes"), "bad_message"),
    ('{"type":"attach","v":2,"job_id":"../../etc"}', "bad_message"),
    ('{"type":"attach","v":2,"job_id":"short"}', "bad_message"),
    ('{"type":"attach","v":2}', "bad_message"),
]


@pytest.mark.parametrize("text, code", REJECTED)
def test_rejections(text, code):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(text)
    assert info.value.code == code
    assert code in p.ERROR_CODES


def test_allowed_restricts_direction():
    hello = p.encode(MESSAGES[3])
    with pytest.raises(p.ProtocolError) as info:
        p.decode(hello, p.CLIENT_MESSAGES)
    assert info.value.code == "unknown_type"


def _server(kind: str, **fields) -> str:
    return json.dumps({"type": kind, "v": 2, **fields})


_FRAME = {"job_id": JOB, "seq": 0, "index": 0, "time_s": 0, "score": 0.5, "faces": [FACE.to_json()]}
SERVER_REJECTED = [
    _server("frame", **{**_FRAME, "faces": []}),  # a score without faces
    _server("frame", **{**_FRAME, "score": None}),  # faces without a score
    _server("frame", **{**_FRAME, "score": 1.5}),
    _server("frame", **{**_FRAME, "faces": [{**FACE.to_json(), "xyxy": [1, 2, 3]}]}),
    _server("frame", **{**_FRAME, "faces": [{**FACE.to_json(), "overlay_jpeg_b64": "not base64!"}]}),
    _server("done", job_id=JOB, report={"schema": "other/9"}),
    _server("done", job_id=JOB, report={**REPORT.to_json(), "schema": "other/9"}),
    _server("done", job_id=JOB, report={**REPORT.to_json(), "label": "maybe"}),
    _server("done", job_id=JOB, report={**REPORT.to_json(), "extra": 1}),  # closed, like every record
    _server("done", job_id=JOB, report={**REPORT.to_json(), "score": None}),  # a fake verdict needs a score
    _server("done", job_id=JOB, report={**REPORT.to_json(), "frames": [{**FRAME_ROWS[1].to_json(), "score": 0.5}]}),
    _server("done", job_id=JOB, report={**REPORT.to_json(), "tracks": [{**TRACK.to_json(), "label": "FAKE"}]}),
    _server("accepted", **{**json.loads(p.encode(MESSAGES[8])), "inconclusive_band": 0.5}),
    _server("error", code="Not A Code", message="m"),
    _server("progress", job_id=JOB, stage="sleeping", frames_done=0, frames_planned=None),
]


@pytest.mark.parametrize("text", SERVER_REJECTED)
def test_server_message_rejections(text):
    with pytest.raises(p.ProtocolError) as info:
        p.decode(text, p.SERVER_MESSAGES)
    assert info.value.code == "bad_message"


def test_construction_validates_like_decode():
    with pytest.raises(p.ProtocolError, match="fake_prob"):
        p.Face(0, (1, 2, 3, 4), 0.9, 1.5, 0)
    with pytest.raises(p.ProtocolError, match="score must be null"):
        p.FrameResult(JOB, 0, 0, 0.0, None, (FACE,))


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    "report",
    [
        "\ud800",
        {"\udfff": 1},
        float("nan"),
        [float("inf")],
        {1, 2},
        _nested(100_000),
    ],
    ids=["surrogate-value", "surrogate-key", "nan", "inf", "set", "deep"],
)
def test_a_report_that_cannot_be_sent_is_refused_when_built(report):
    """``Done.report`` is sent as strict JSON in UTF-8: what ``encode`` could not write is ``bad_message`` at
    construction (a typed error where the message is made), never a ValueError/RecursionError at send time."""
    with pytest.raises(p.ProtocolError) as err:
        p.Done(JOB, {**REPORT.to_json(), "version": report})
    assert err.value.code == "bad_message"


def test_a_decoded_report_with_a_lone_surrogate_is_bad_message():
    report = json.dumps(REPORT.to_json())
    text = '{"type":"done","v":2,"job_id":"' + JOB + '","report":' + report.replace('"0.1.0"', '"\\ud800"') + "}"
    assert "ud800" in text
    with pytest.raises(p.ProtocolError) as err:
        p.decode(text, p.SERVER_MESSAGES)
    assert err.value.code == "bad_message"


def test_face_overlay_bytes():
    assert FACE.overlay_jpeg() == b"\xff\xd8jpeg"
    assert dataclasses.replace(FACE, overlay_jpeg_b64=None).overlay_jpeg() is None


def test_checked_in_schema_is_current():
    assert p.SCHEMA_PATH.read_text() == p.schema_text(), "run: python -m stream.protocol"


def test_schema_lists_every_message_and_closed_objects():
    schema = p.json_schema()
    refs = {one["$ref"].rsplit("/", 1)[1] for one in schema["oneOf"]}
    assert refs == {m.__name__ for m in p.CLIENT_MESSAGES + p.SERVER_MESSAGES}
    for name, definition in schema["$defs"].items():
        assert definition["additionalProperties"] is False, name
    assert schema["$defs"]["Start"]["required"] == ["type", "v", "name", "size_bytes"]


def test_schema_validates_encoded_messages():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(p.json_schema())
    for message in MESSAGES:
        validator.validate(json.loads(p.encode(message)))


def test_protocol_mirrors_the_pipeline():
    """The protocol copies these so the web client needs no pipeline import; they must not drift."""
    assert [f.name for f in dataclasses.fields(p.Media)] == [f.name for f in dataclasses.fields(MediaInfo)]
    assert [f.name for f in dataclasses.fields(p.Policy)] == [f.name for f in dataclasses.fields(SamplingPolicy)]
    assert set(p.SampleModeName.__args__) == {m.value for m in SampleMode}
    assert set(p.StrategyName.__args__) == {s.value for s in Strategy}
    assert p.REPORT_SCHEMA == REPORT_SCHEMA
    codes = {
        cls.code
        for cls in vars(pipeline_errors).values()
        if isinstance(cls, type) and issubclass(cls, pipeline_errors.DffError) and cls is not pipeline_errors.DffError
    }
    assert codes <= set(p.ERROR_CODES)


def test_client_side_imports_no_torch_and_no_pipeline():
    code = (
        "import sys, stream.protocol, ui.client; "
        "bad = [m for m in sys.modules if m == 'torch' or m == 'pipeline' or m.startswith(('torch.', 'pipeline.'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------------------------- reports

JOB_LISTING = p.JobListing(
    JOB, "done", 1.5, 2.5, "clip.mp4", 1234, "cd" * 32, p.JobModel("seed.pth", "ab" * 32), "fake", 0.75, 2, None
)
RECORDS = [
    PROVENANCE,
    UNSIGNED,
    dataclasses.replace(REPORT, provenance=PROVENANCE),
    PROFILE,
    dataclasses.replace(PROFILE, mean=None, std=None),
    REPORT_MODEL,
    FACE_ROW,
    *FRAME_ROWS,
    TRACK,
    *SEGMENTS,
    p.Timings(0.1, 0.2, 0.3, 0.7),
    p.Summary(2, 1, 1, 1, False),
    REPORT,
    p.StoredFrames(JOB, "cancelled", FRAME_ROWS),
    p.JobModel("seed.pth", None),
    p.JobError("decode_error", "cut"),
    JOB_LISTING,
    dataclasses.replace(JOB_LISTING, status="failed", label=None, score=None, error=p.JobError("bad_media", None)),
    p.ReportPage((JOB_LISTING,), "17"),
    p.ReportPage((), None),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_report_records_round_trip(record):
    """Every report/HTTP record: to JSON text and back is equal."""
    text = json.dumps(record.to_json(), allow_nan=False)
    assert type(record).from_json(json.loads(text)) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_report_records_schema_validates_their_json(record):
    jsonschema = pytest.importorskip("jsonschema")
    text = json.dumps(record.to_json(), allow_nan=False)
    schema = {**p.json_schema(), "$ref": f"#/$defs/{type(record).__name__}"}
    del schema["oneOf"]
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))


def assert_same_fields(pairs: list[tuple[type, type]]) -> None:
    """Each (wire record, pipeline record) pair has the same field names."""
    for wire, pipe in pairs:
        assert {f.name for f in dataclasses.fields(wire)} == {f.name for f in dataclasses.fields(pipe)}, wire


def test_report_records_mirror_the_pipeline():
    """The wire report has exactly the fields pipeline/report.py writes, so a report never drifts from it."""
    from pipeline import types as t

    pairs = [
        (p.Profile, t.PreprocessProfile),
        (p.ReportModel, t.ModelInfo),
        (p.FaceRow, t.FaceRow),
        (p.FrameRow, t.FrameRow),
        (p.Track, t.Track),
        (p.Segment, t.Segment),
        (p.Timings, t.StageTimings),
    ]
    assert_same_fields(pairs)
    assert {f.name for f in dataclasses.fields(p.Report)} == {f.name for f in dataclasses.fields(t.Report)} | {
        "schema",
        "summary",
    }
    assert set(p.LabelName.__args__) == {label.value for label in t.Label}


def test_provenance_records_mirror_the_pipeline():
    """The wire provenance has the fields pipeline/provenance/records.py writes (plus the derived summary
    and found), its states, flag codes and schema name."""
    from pipeline.provenance import metadata as m
    from pipeline.provenance import records as r

    pairs = [
        (p.C2paAction, r.C2paAction),
        (p.C2paIngredient, r.C2paIngredient),
        (p.C2paStatus, r.C2paStatus),
        (p.C2paManifest, r.C2paManifest),
        (p.C2paResult, r.C2pa),
        (p.MetadataTag, r.Tag),
        (p.MetadataFlag, r.Flag),
        (p.SectionError, r.SectionError),
        (p.ProvenanceMetadata, r.Metadata),
    ]
    assert_same_fields(pairs)
    fields = {f.name for f in dataclasses.fields(r.Provenance)} | {"summary", "found"}
    assert {f.name for f in dataclasses.fields(p.Provenance)} == fields
    assert set(p.C2paStateName.__args__) == {s.value for s in r.C2paState}
    flag_codes = set(typing.get_args(typing.get_type_hints(p.MetadataFlag)["code"]))
    assert flag_codes == set(m.FLAG_CODES)
    assert p.PROVENANCE_SCHEMA == r.PROVENANCE_SCHEMA


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """A report made by ``pipeline.run.analyze()`` on a tiny two-person clip with random weights."""
    from pipeline.config import Settings
    from pipeline.engine import Engine
    from pipeline.report import report_to_dict
    from pipeline.run import analyze
    from pipeline.sources import open_media_for
    from pipeline.types import Report
    from tests.media import moving_faces_clip

    clip = moving_faces_clip(tmp_path_factory.mktemp("media") / "two.mp4", seconds=1.0, fps=10, n_faces=2)
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu", every_s=0.25)
    with Engine.open(settings, allow_untrained=True) as engine, open_media_for(clip, settings) as source:
        report = [e for e in analyze(source, engine, settings) if isinstance(e, Report)][-1]
    return report, report_to_dict(report)


def test_a_real_report_decodes_once_into_records(real_report):
    report, body = real_report
    decoded = p.decode_report(json.loads(json.dumps(body)))
    assert decoded.to_json() == body, "decode then encode gives back the server's JSON"
    assert (decoded.label, decoded.score, decoded.threshold) == (report.label.value, report.score, report.threshold)
    assert decoded.media.sha256 == report.media.sha256 and decoded.model.profile.crop_px == report.model.profile.crop_px
    assert len(decoded.frames) == len(report.frames) and decoded.summary.n_faces == report.n_faces > 0
    assert [(t.track_id, t.label, t.confident_fake) for t in decoded.tracks] == [
        (t.track_id, t.label.value, t.confident_fake) for t in report.tracks
    ]
    assert len(decoded.tracks) == 2 and all(isinstance(t, p.Track) for t in decoded.tracks)
    done = p.decode(p.encode(p.Done(JOB, body)), p.SERVER_MESSAGES)
    assert isinstance(done, p.Done) and done.report == decoded, "a server builds done from the JSON object"
