"""A job's program: what runs on the backend's side of the seam (stream/backend.py), on any backend.

``job_program`` is the program of every job: a live session (stream/live_program.py) or a file's analysis
(``analysis_events``). This is where analysis events become wire-ready records (overlays rendered to base64
JPEG here) and where the pipeline's error tree becomes the protocol's ``error`` codes (``err.code``). No
traceback ever reaches a client: a program that raises anything else is logged by the backend and ends
as ``internal``. The in-process worker (stream/worker.py) and a Ray actor (stream/ray_actor.py) both run it;
it imports nothing of the server, so an actor can import it alone.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial

import numpy as np

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.errors import DffError, NoModel
from pipeline.overlay import overlay_jpeg
from pipeline.provenance.records import Provenance, provenance_to_dict
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import (
    AnalysisStart,
    FaceVerdict,
    FrameVerdict,
    ModelInfo,
    Report,
    SamplingPolicy,
    Strategy,
)
from stream import protocol as p
from stream.backend import BackendEvent, Failed, Finished, JobSpec
from stream.live_program import LiveRequest, live_program

NO_MODEL_MESSAGE = (
    "this server has no model loaded; an operator can install one with PUT /v1/models/{name} and "
    "POST /v1/models/{name}/activate, or restart it with a checkpoint"
)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A ``start``'s options resolved against the server's Settings."""

    policy: SamplingPolicy
    strategy: Strategy
    threshold: float | None  # None = analyze() picks it: Settings, else the model card's, else 0.5
    overlays: bool
    live: LiveRequest | None = None  # a live job (watch/push): where it reads from


def model_summary(info: ModelInfo, detectors: tuple[ModelInfo, ...] = ()) -> p.ModelSummary:
    return p.ModelSummary(
        name=info.name,
        sha256=info.sha256,
        device=info.device,
        untrained=info.untrained,
        detectors=tuple(d.name for d in detectors),
    )


def _jpeg_b64(crop: np.ndarray, heatmap: np.ndarray) -> str:
    return base64.b64encode(overlay_jpeg(crop, heatmap)).decode("ascii")


def _face(face: FaceVerdict, overlays: bool) -> p.Face:
    b64 = None
    if overlays and face.crop is not None:
        b64 = _jpeg_b64(face.crop, face.heatmap)
    members: tuple[str, ...] = ()
    if overlays and face.members and all(m.crop is not None for m in face.members):
        members = tuple(_jpeg_b64(m.crop, m.heatmap) for m in face.members)  # type: ignore[arg-type]
    return p.Face(
        face_index=face.box.face_index,
        xyxy=face.box.xyxy,
        detector_prob=face.box.detector_prob,
        fake_prob=face.fake_prob,
        track_id=face.track_id,
        overlay_jpeg_b64=b64,
        detector_probs=tuple(m.fake_prob for m in face.members),
        detector_overlays_jpeg_b64=members,
    )


def frame_message(job_id: str, seq: int, verdict: FrameVerdict, overlays: bool) -> p.FrameResult:
    """A FrameVerdict on the wire; overlays (base64 JPEG) only when asked, since they are compute."""
    return p.FrameResult(
        job_id=job_id,
        seq=seq,
        index=verdict.index,
        time_s=verdict.time_s,
        score=verdict.score,
        faces=tuple(_face(f, overlays) for f in verdict.faces),
    )


def accepted_message(job_id: str, start: AnalysisStart, request: JobRequest) -> p.Accepted:
    policy = start.policy
    return p.Accepted(
        job_id=job_id,
        media=p.Media(**dataclasses.asdict(start.media)),
        planned_frames=start.planned_frames,
        policy=p.Policy(policy.mode.value, policy.every_s, policy.count, policy.max_frames),
        strategy=request.strategy.value,
        threshold=start.threshold,
        threshold_source=start.threshold_source,
        inconclusive_band=start.inconclusive_band,
        overlays=request.overlays,
        model=model_summary(start.model, start.detectors),
        provenance=wire_provenance(start.provenance),
    )


def wire_provenance(provenance: Provenance | None) -> p.Provenance | None:
    """The pipeline's provenance record as the protocol's (the same JSON, checked on the way)."""
    return None if provenance is None else p.Provenance.from_json(provenance_to_dict(provenance), "provenance")


def job_program(
    spec: JobSpec, engine: Engine | None, wake: Callable[[], None], *, settings: Settings
) -> Iterator[BackendEvent]:
    """The program of any job: a live session (stream/live_program.py) or a file's analysis."""
    request: JobRequest = spec.request
    if request.live is None or engine is None:
        return analysis_events(spec, engine, settings)
    return live_program(
        spec,
        engine,
        settings,
        wake,
        accepted=partial(accepted_message, spec.job_id, request=request),
        frame=lambda seq, update: frame_message(spec.job_id, seq, update.verdict, request.overlays),
    )


def analysis_events(spec: JobSpec, engine: Engine | None, settings: Settings) -> Iterator[BackendEvent]:
    """One job on ``engine`` (on the backend's worker): its analysis as wire-ready events, one per step,
    ending with ``Finished`` or ``Failed``. Anything but the error tree propagates (the backend logs it)."""
    request: JobRequest = spec.request
    job_id = spec.job_id
    if engine is None:
        yield Failed("no_model", NO_MODEL_MESSAGE)
        return
    try:
        assert spec.path is not None, "a file job has its upload"
        with open_media_for(spec.path, settings, request.policy) as source:
            events = analyze(source, engine, settings, strategy=request.strategy, threshold=request.threshold)
            with closing(events):
                seq = 0
                for event in events:
                    if isinstance(event, AnalysisStart):
                        yield accepted_message(job_id, event, request)
                        yield p.Progress(job_id, "analyzing", 0, event.planned_frames)
                    elif isinstance(event, FrameVerdict):
                        yield frame_message(job_id, seq, event, request.overlays)
                        seq += 1
                    elif isinstance(event, Report):
                        yield Finished(event)
                        return
    except DffError as err:
        yield Failed(err.code, NO_MODEL_MESSAGE if isinstance(err, NoModel) else str(err))
    # ending without a final event is a bug the backend logs and turns into ``internal``
