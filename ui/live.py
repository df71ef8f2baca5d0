"""One analysis as the page follows it: the per-tab ``Session``, the ``start`` options from the Options
panel, overlay images for galleries, report downloads, and batching of messages into page updates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from stream import protocol as p
from ui import timeline as tl
from ui.client import HttpApi

MIN_UPDATE_S = 0.25  # at most ~4 page updates a second while frames stream in; the rest are coalesced
# messages read ahead of the page: when it renders slower than they come, reading the websocket stops, so
# the server's per-viewer budget and drop rule (stream/watchers.py) apply to the page as to any client
PAGE_QUEUE_MESSAGES = 64


@dataclass
class Session:
    """One browser tab's analysis (a ``gr.State``): the frames so far with their overlays, and the report."""

    job_id: str | None = None
    name: str = ""
    frames: list[p.FrameResult] = field(default_factory=list)
    media: p.Media | None = None
    planned: int | None = None
    threshold: float = 0.5
    band: float = 0.05  # the inconclusive band, from ``accepted`` (the UI's setting for a reopened report)
    detectors: tuple[str, ...] = ()  # an ensemble's detectors, from ``accepted``
    report: p.Report | None = None
    provenance: p.Provenance | None = None  # what the file says about itself, from ``accepted`` (None: live)
    photo_path: str | None = None
    selected_seq: int | None = None
    started_s: float = 0.0

    @property
    def is_image(self) -> bool:
        return self.media.is_image if self.media is not None else self.report is not None and self.report.media.is_image


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def face_gallery(frame: p.FrameResult | None, detectors: Sequence[str] = ()) -> list[tuple[Image.Image, str]]:
    """The frame's Grad-CAM overlays with captions (faces without an overlay are left out); an ensemble's
    faces also show each detector's (``detectors``: their names, from ``accepted``)."""
    if frame is None:
        return []
    faces = sorted(frame.faces, key=lambda f: f.track_id)
    out = []
    for f in faces:
        if f.overlay_jpeg_b64:
            out.append((_image(f.overlay_jpeg_b64), tl.face_caption(f, short=True)))
        # an ensemble's face: each detector's own Grad-CAM beside the fused one
        for i, (b64, prob) in enumerate(zip(f.detector_overlays_jpeg_b64, f.detector_probs, strict=False)):
            name = detectors[i] if i < len(detectors) else f"detector {i + 1}"
            out.append((_image(b64), f"{tl.person_name(f.track_id)} · {name} · {prob:.2f}"))
    return out


def gallery_label(frame: p.FrameResult | None, live: bool) -> str:
    if frame is None:
        return "Faces"
    head = f"Faces in frame {frame.index} at {frame.time_s:.2f} s"
    if not frame.faces:
        return head + ": no face"
    return head + (" (latest)" if live else " — click the timeline to pick another frame")


def build_options(
    mode: str,
    every_s: float | None,
    count: float | None,
    max_frames: float | None,
    strategy: str,
    threshold: float,
    server_threshold: bool = False,
) -> p.Options:
    """The ``start`` options from the Options panel (overlays always on: the page shows them).
    ``server_threshold``: send no threshold, so the server uses its operating point (DFF_THRESHOLD, else
    the model card's calibrated threshold, else 0.5) and says which in ``accepted``."""
    return p.Options(
        sample_mode=mode,  # type: ignore[arg-type]
        every_s=float(every_s) if mode == "every_s" and every_s else None,
        count=int(count) if mode == "count" and count else None,
        max_frames=int(max_frames) if max_frames else None,
        strategy=strategy,  # type: ignore[arg-type]
        threshold=None if server_threshold else float(threshold),
        overlays=True,
    )


def options_summary(
    mode: str,
    every_s: float | None,
    count: float | None,
    max_frames: float | None,
    strategy: str,
    threshold: float,
    server_threshold: bool = False,
) -> str:
    """One line under the collapsed Options panel saying what the next analysis will use (HTML)."""
    try:
        o = build_options(mode, every_s, count, max_frames, strategy, threshold, server_threshold)
    except p.ProtocolError as err:  # shown before the upload, not as a failed analysis after it
        return f'<div class="dff-small dff-error" data-invalid="1">Options: {html.escape(str(err))}</div>'
    sampling = {
        "every_s": f"one frame every {o.every_s:g} s" if o.every_s else "one frame every N s (server default)",
        "count": f"{o.count} frames spread evenly" if o.count else "N frames (server default)",
        "keyframes": "keyframes only",
        "all": "every frame",
    }.get(o.sample_mode, o.sample_mode)
    cap = f", at most {o.max_frames}" if o.max_frames else ""
    cut = "the server's operating point" if o.threshold is None else f"FAKE at P ≥ {o.threshold:.2f}"
    return (
        f'<div class="dff-small" data-every-s="{o.every_s or ""}" data-mode="{o.sample_mode}">'
        f"Next analysis: {sampling}{cap} · {o.strategy.replace('_', ' ')} · {cut}</div>"
    )


KEEP_DOWNLOADS = 64  # report folders kept for the download buttons; older ones are removed
_downloads: tempfile.TemporaryDirectory[str] | None = None  # made at the first download, removed at exit


def _download_folder(job_id: str) -> Path:
    """A fresh folder for one job's files; a long-running server keeps only the newest KEEP_DOWNLOADS."""
    global _downloads
    if _downloads is None:
        _downloads = tempfile.TemporaryDirectory(prefix="dff-ui-")
    root = Path(_downloads.name)
    folder = root / job_id
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)  # the newest, also when this job's files are fetched again
    folders = sorted((f for f in root.iterdir() if f.is_dir()), key=lambda f: f.stat().st_mtime)
    for old in folders[: max(0, len(folders) - KEEP_DOWNLOADS)]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


async def download_files(api: HttpApi, session: Session) -> tuple[str | None, str | None]:
    """The report as JSON and CSV files from the HTTP API, for the download buttons."""
    if session.job_id is None:
        return None, None
    folder = _download_folder(session.job_id)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(session.name or "report").stem)[:80] or "report"
    report = await api.report(session.job_id)
    json_path = folder / f"{stem}.report.json"
    json_path.write_text(json.dumps(report.to_json(), indent=2))
    csv_path = folder / f"{stem}.faces.csv"
    csv_path.write_text(await api.report_csv(session.job_id))
    return str(json_path), str(csv_path)


async def coalesced(messages: AsyncIterator[p.Message]) -> AsyncIterator[list[p.Message]]:
    """Batches of the messages that arrived together, at most one batch per ``MIN_UPDATE_S`` while frames
    stream (the page re-renders per batch, not per message); the final message ends its batch at once.
    At most ``PAGE_QUEUE_MESSAGES`` are read ahead, and a batch holds at most as many."""
    queue: asyncio.Queue[p.Message | BaseException | None] = asyncio.Queue(maxsize=PAGE_QUEUE_MESSAGES)

    async def pump() -> None:
        # no sentinel once cancelled: the consumer is gone, and a full queue would never take it
        try:
            async for message in messages:
                await queue.put(message)
        except Exception as err:  # handed to the consumer, which raises it in the handler
            await queue.put(err)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    last = 0.0
    try:
        while True:
            batch: list[p.Message] = []
            item = await queue.get()
            while True:
                if item is None:
                    if batch:
                        yield batch
                    return
                if isinstance(item, BaseException):
                    if batch:
                        yield batch
                    raise item
                batch.append(item)
                if isinstance(item, (p.Done, p.Error)) or len(batch) >= PAGE_QUEUE_MESSAGES:
                    break
                wait_s = MIN_UPDATE_S - (time.monotonic() - last)
                if queue.empty() and (wait_s <= 0 or not isinstance(item, p.FrameResult)):
                    break
                try:
                    item = (
                        await asyncio.wait_for(queue.get(), max(wait_s, 0.0)) if queue.empty() else queue.get_nowait()
                    )
                except asyncio.TimeoutError:
                    break
            last = time.monotonic()
            yield batch
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
