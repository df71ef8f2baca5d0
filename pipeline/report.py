"""Report ⇄ JSON (schema-versioned) and Report → CSV (one row per face). Pure; no I/O beyond strings."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from enum import Enum
from typing import Any

from pipeline.provenance.records import provenance_from_dict, provenance_to_dict
from pipeline.session_types import EndReason, LiveSession, LiveStats
from pipeline.types import (
    FaceRow,
    FrameRow,
    Label,
    MediaInfo,
    MediaKind,
    ModelInfo,
    PreprocessProfile,
    RejectedFace,
    Report,
    SampleMode,
    SamplingPolicy,
    Segment,
    StageTimings,
    Strategy,
    Track,
)

SCHEMA = "dff.report/1"

CSV_COLUMNS = (
    "file",
    "frame_index",
    "time_s",
    "face_index",
    "track_id",
    "x1",
    "y1",
    "x2",
    "y2",
    "detector_prob",
    "fake_prob",
    "frame_score",
    "provenance",  # the file's provenance summary line (the same on every row), empty where none was read
)


def _plain(value: Any) -> Any:
    """Dataclasses/enums/tuples → JSON types (floats kept exact so a report round-trips)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def report_to_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON types, with ``schema`` first and a few derived summary fields."""
    body = _plain(report)
    body["provenance"] = None if report.provenance is None else provenance_to_dict(report.provenance)
    return {
        "schema": SCHEMA,
        **body,
        "summary": {
            # a live report keeps no frame rows (they were streamed): its count is the session's
            "n_frames": report.session.frames_analysed if report.session is not None else len(report.frames),
            "n_faces": report.n_faces,
            "n_people": len(report.tracks),
            "n_segments": sum(1 for s in report.segments if s.track_id is None),
            "untrained_model": report.model.untrained,
        },
    }


def report_to_json(report: Report, indent: int | None = 2) -> str:
    return json.dumps(report_to_dict(report), indent=indent, allow_nan=False)


def report_from_dict(data: dict[str, Any]) -> Report:
    """Inverse of ``report_to_dict``. Raises ValueError on another schema or a malformed body."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report (schema={data.get('schema')!r})")
    try:
        media = MediaInfo(**{**data["media"], "kind": MediaKind(data["media"].get("kind", MediaKind.FILE.value))})
        p = data["policy"]
        policy = SamplingPolicy(SampleMode(p["mode"]), p["every_s"], p["count"], p["max_frames"])
        model = _model(data["model"])
        frames = tuple(
            FrameRow(
                f["index"],
                f["time_s"],
                f["score"],
                tuple(
                    FaceRow(
                        x["face_index"],
                        tuple(x["xyxy"]),
                        x["detector_prob"],
                        x["fake_prob"],
                        x["track_id"],
                        tuple(x.get("detector_probs", ())),
                    )
                    for x in f["faces"]
                ),
            )
            for f in data["frames"]
        )
        tracks = tuple(
            Track(
                t["track_id"],
                tuple(t["frame_indices"]),
                t["first_time_s"],
                t["last_time_s"],
                tuple(t["fake_probs"]),
                t["score"],
                Label(t["label"]),
                # reports from before the field: FAKE meant confidently fake then
                t.get("confident_fake", t["label"] == Label.FAKE.value),
                t.get("supported", True),  # reports from before the face gates: every track was a person
            )
            for t in data["tracks"]
        )
        rejected = tuple(
            RejectedFace(r["frame_index"], r["time_s"], tuple(r["xyxy"]), r["detector_prob"], r["gate"], r["reason"])
            for r in data.get("rejected", ())
        )
        return Report(
            media=media,
            policy=policy,
            model=model,
            strategy=Strategy(data["strategy"]),
            threshold=data["threshold"],
            score=data["score"],
            label=Label(data["label"]),
            frames=frames,
            tracks=tracks,
            segments=tuple(Segment(**s) for s in data["segments"]),
            timings=StageTimings(**data["timings"]),
            version=data["version"],
            incomplete=data.get("incomplete"),
            threshold_source=data.get("threshold_source", "settings"),  # older reports: the server's setting
            session=_session(data.get("session")),
            detectors=tuple(_model(m) for m in data.get("detectors", ())),
            fusion=data.get("fusion"),
            rejected=rejected,
            n_rejected=data.get("n_rejected", len(rejected)),
            provenance=None if data.get("provenance") is None else provenance_from_dict(data["provenance"]),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed {SCHEMA} report: {err}") from err


def _model(m: dict[str, Any]) -> ModelInfo:
    prof = m["profile"]
    profile = PreprocessProfile(
        **{
            **prof,
            "mean": tuple(prof["mean"]) if prof["mean"] else None,
            "std": tuple(prof["std"]) if prof["std"] else None,
        }
    )
    return ModelInfo(
        m["name"],
        m["sha256"],
        profile,
        m["device"],
        m["untrained"],
        # card fields are optional: reports written before model cards existed lack them
        card_name=m.get("card_name"),
        card_summary=m.get("card_summary"),
        temperature=m.get("temperature", 1.0),
        calibrated_threshold=m.get("calibrated_threshold"),
        precision=m.get("precision", "fp32"),  # reports from before the setting ran in fp32
        detector=m.get("detector", "seed-irv1"),  # reports from before the registry: the seed's
    )


def _session(data: dict[str, Any] | None) -> LiveSession | None:
    if data is None:
        return None
    return LiveSession(
        started_s=data["started_s"],
        stopped_s=data["stopped_s"],
        end=EndReason(data["end"]),
        end_message=data["end_message"],
        stats=LiveStats(**data["stats"]),
        frames_analysed=data["frames_analysed"],
        lag_p50_s=data["lag_p50_s"],
        lag_p95_s=data["lag_p95_s"],
    )


def report_to_csv(report: Report) -> str:
    """One row per face (frames without faces have no row), header ``CSV_COLUMNS``; an ensemble's report
    adds one ``fake_prob:<detector file>`` column per detector (``fake_prob`` is then the fused one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + tuple(f"fake_prob:{d.name}" for d in report.detectors))
    provenance = "" if report.provenance is None else report.provenance.summary
    for frame in report.frames:
        for face in frame.faces:
            x1, y1, x2, y2 = face.xyxy
            writer.writerow(
                [
                    report.media.name,
                    frame.index,
                    f"{frame.time_s:.3f}",
                    face.face_index,
                    face.track_id,
                    f"{x1:.1f}",
                    f"{y1:.1f}",
                    f"{x2:.1f}",
                    f"{y2:.1f}",
                    f"{face.detector_prob:.4f}",
                    f"{face.fake_prob:.6f}",
                    f"{frame.score:.6f}" if frame.score is not None else "",
                    provenance,
                    *(f"{p:.6f}" for p in face.detector_probs),
                ]
            )
    return out.getvalue()
