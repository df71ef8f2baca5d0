"""The Analyze tab's handlers: stream one file through the websocket API into page updates (status,
live timeline, the current frame's faces, then the verdict card, people and downloads), and show the
faces of a frame picked on the timeline. A mixin of ``ui.app.Page``, which creates the components."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageOps

from stream import protocol as p
from ui import cards, svg
from ui import timeline as tl
from ui.address import ServerAddress, ws_url
from ui.client import ClientError, HttpApi, analyze_file
from ui.config import UiConfig
from ui.live import Session, build_options, coalesced, download_files, face_gallery, gallery_label

log = logging.getLogger("dff.ui")


class AnalyzeTab:
    """Handlers of the Analyze tab; every handler returns ``{component: update}`` for the parts it changes."""

    cfg: UiConfig
    address: ServerAddress
    state: gr.State
    banner: gr.HTML
    status: gr.HTML
    video_col: gr.Column
    timeline: gr.HTML
    frame_gallery: gr.Gallery
    frame_table: gr.Dataframe
    photo_col: gr.Column
    photo_annot: gr.AnnotatedImage
    photo_gallery: gr.Gallery
    result_col: gr.Column
    verdict_html: gr.HTML
    people_html: gr.HTML
    dl_json: gr.DownloadButton
    dl_csv: gr.DownloadButton

    # ---- rendering --------------------------------------------------------------------------------

    def timeline_value(self, s: Session) -> str:
        duration = s.media.duration_s if s.media is not None else None
        if duration is None and s.report is not None:
            duration = s.report.media.duration_s
        spans = tl.report_spans(s.report) if s.report is not None else None
        fig = tl.build_figure(
            s.frames,
            threshold=s.threshold,
            band=s.band,
            duration_s=duration,
            spans=spans,
            selected_seq=s.selected_seq,
        )
        n = len(fig.lines)
        caption = (
            f"{len(s.frames)} sampled frame{'s' if len(s.frames) != 1 else ''}, {n} "
            f"{'person' if n == 1 else 'people'}. Hover a point for its value; click to see that frame's faces."
        )
        return svg.timeline_html(fig, caption)

    def photo_value(self, s: Session) -> Any:
        frame = s.frames[0] if s.frames else None
        if frame is None or s.photo_path is None:
            return None
        try:
            with Image.open(s.photo_path) as raw:
                image = ImageOps.exif_transpose(raw).convert("RGB")
        except OSError:
            return None
        sx = sy = 1.0
        if s.media is not None and (s.media.width, s.media.height) != image.size:
            sx, sy = image.size[0] / s.media.width, image.size[1] / s.media.height
        return image, tl.photo_boxes(frame, sx, sy)

    def photo_colors(self, s: Session) -> dict[str, str]:
        frame = s.frames[0] if s.frames else None
        if frame is None:
            return {}
        return {tl.face_caption(f): tl.person_color(f.track_id) for f in frame.faces}

    def final_updates(self, s: Session, api: HttpApi | None) -> dict[str, Any]:
        """Everything a finished (or reopened) report shows, minus the downloads."""
        assert s.report is not None
        report = s.report
        verdict = tl.verdict(report)
        people = tl.person_summaries(report, s.frames)
        thumbs: dict[int, str] = {}
        thumb_faces: dict[int, p.Face] = {}
        for person in people:
            if person.thumb is not None:
                frame = tl.frame_by_seq(s.frames, person.thumb[0])
                face = next((f for f in frame.faces if f.face_index == person.thumb[1]), None) if frame else None
                if face is not None:
                    thumb_faces[person.track_id] = face
                if face is not None and face.overlay_jpeg_b64:
                    thumbs[person.track_id] = face.overlay_jpeg_b64
        out: dict[str, Any] = {
            self.result_col: gr.Column(visible=True),
            self.verdict_html: cards.verdict_row(
                cards.verdict_card(verdict, s.band),
                cards.provenance_card(report.provenance if report.provenance is not None else s.provenance),
            ),
            self.people_html: cards.people_cards(people, thumbs, report.threshold, is_image=report.media.is_image)
            + cards.detector_cards(report, thumb_faces),
            self.frame_table: gr.Dataframe(value=tl.frame_rows(s.frames)),
        }
        if s.is_image:
            out[self.video_col] = gr.Column(visible=False)
            out[self.photo_col] = gr.Column(visible=s.photo_path is not None)
        else:
            if s.selected_seq is None and s.frames:
                # show the most suspicious frame once the analysis is over
                best = max(s.frames, key=lambda f: -1.0 if f.score is None else f.score)
                s.selected_seq = best.seq
            frame = tl.frame_by_seq(s.frames, s.selected_seq) if s.selected_seq is not None else None
            out[self.video_col] = gr.Column(visible=True)
            out[self.photo_col] = gr.Column(visible=False)
            out[self.timeline] = self.timeline_value(s)
            faces = face_gallery(frame, s.detectors)
            # a report reopened from History has no heatmaps: no empty gallery then
            out[self.frame_gallery] = gr.Gallery(
                value=faces, label=gallery_label(frame, live=False), visible=bool(faces) or not s.frames
            )
        return out

    def reset_updates(self, status: str) -> dict[str, Any]:
        return {
            self.status: status,
            self.video_col: gr.Column(visible=False),
            self.photo_col: gr.Column(visible=False),
            self.result_col: gr.Column(visible=False),
            self.dl_json: gr.DownloadButton(value=None, visible=False),
            self.dl_csv: gr.DownloadButton(value=None, visible=False),
        }

    def status_of(self, s: Session, stage: str) -> str:
        people = len(tl.track_ids(s.frames))
        detail = tl.progress_line(len(s.frames), s.planned, people)
        if s.media is not None:
            detail = f"{s.media.name}: {detail}"
        estimate = tl.running_estimate(s.frames, s.threshold, s.band) if s.frames else None
        return cards.status_html(stage, detail, tl.progress_fraction(len(s.frames), s.planned), estimate)

    # ---- analysis ---------------------------------------------------------------------------------

    async def analyze(
        self,
        path: str | None,
        mode: str,
        every_s: float | None,
        count: float | None,
        max_frames: float | None,
        strategy: str,
        threshold: float,
        server_threshold: bool,
        token: str | None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Upload the file and stream the page: status, timeline, faces, then the verdict card."""
        s = Session(threshold=float(threshold), band=self.cfg.band, started_s=time.monotonic())
        if not path:
            yield {self.state: s, **self.reset_updates(cards.empty_state())}
            return
        s.name = Path(path).name
        yield {self.state: s, **self.reset_updates(cards.status_html("Connecting", s.name))}
        try:
            options = build_options(mode, every_s, count, max_frames, strategy, threshold, server_threshold)
            base = self.address.get()
            api = HttpApi(base, token)
            async for messages in coalesced(analyze_file(path, ws_url(base), token=token, options=options)):
                update: dict[str, Any] = {}
                for message in messages:
                    update.update(await self._on_message(s, message, path, api))
                if update:
                    update[self.state] = s
                    yield update
        except (ClientError, p.ProtocolError) as err:
            code = getattr(err, "code", "internal")
            yield {
                self.state: s,
                self.status: cards.error_box(code, str(err), max_upload_bytes=self.cfg.max_upload_bytes),
            }
        except Exception:  # never a traceback on the page; the server log has it
            log.exception("web UI analysis of %s failed", s.name)
            yield {self.state: s, self.status: cards.error_box("internal", "the web page hit an unexpected error")}

    async def _on_message(self, s: Session, message: p.Message, path: str, api: HttpApi) -> dict[str, Any]:
        if isinstance(message, p.Hello):
            return {}
        if isinstance(message, p.Progress):
            s.job_id = message.job_id
            if message.stage == "uploading":
                return {self.status: cards.status_html("Uploading", s.name)}
            if message.stage == "queued":
                ahead = message.queue_position or 0
                detail = "next in line" if ahead == 0 else f"{ahead} job{'s' if ahead != 1 else ''} ahead"
                return {self.status: cards.status_html("Queued", f"{s.name}: {detail}")}
            return {self.status: self.status_of(s, "Analysing")}
        if isinstance(message, p.Accepted):
            s.job_id, s.media, s.planned, s.threshold, s.band = (
                message.job_id,
                message.media,
                message.planned_frames,
                message.threshold,
                message.inconclusive_band,
            )
            s.detectors = message.model.detectors
            s.provenance = message.provenance
            update: dict[str, Any] = {self.status: self.status_of(s, "Analysing")}
            if s.provenance is not None:  # known before the first frame: shown while the pixels are analysed
                update[self.result_col] = gr.Column(visible=True)
                update[self.verdict_html] = cards.verdict_row(
                    cards.verdict_pending(), cards.provenance_card(s.provenance)
                )
                update[self.people_html] = ""
            if message.model.untrained:
                update[self.banner] = cards.untrained_banner(message.model.name)
            if message.media.is_image:
                s.photo_path = path
                update[self.photo_col] = gr.Column(visible=True)
            else:
                update[self.video_col] = gr.Column(visible=True)
                update[self.timeline] = self.timeline_value(s)
                update[self.frame_gallery] = gr.Gallery(value=[], label="Faces", visible=True)
            return update
        if isinstance(message, p.FrameResult):
            s.frames.append(message)
            update = {self.status: self.status_of(s, "Analysing")}
            if s.is_image:
                update[self.photo_annot] = gr.AnnotatedImage(value=self.photo_value(s), color_map=self.photo_colors(s))
                update[self.photo_gallery] = face_gallery(message, s.detectors)
            else:
                update[self.timeline] = self.timeline_value(s)
                if message.faces or not s.frames[:-1]:
                    update[self.frame_gallery] = gr.Gallery(
                        value=face_gallery(message, s.detectors), label=gallery_label(message, live=True)
                    )
            return update
        if isinstance(message, p.Done):
            s.report = message.report
            s.job_id = message.job_id
            took = time.monotonic() - s.started_s
            update = self.final_updates(s, api)
            n_people = len(message.report.tracks)
            if s.is_image:
                n_faces = sum(len(f.faces) for f in s.frames)
                detail = f"{n_faces} face{'s' if n_faces != 1 else ''}"
            else:
                detail = tl.progress_line(len(s.frames), len(s.frames), n_people)
            update[self.status] = cards.status_html("Done", f"{s.name}: {detail} in {took:.1f} s", 1.0)
            try:
                json_path, csv_path = await download_files(api, s)
                update[self.dl_json] = gr.DownloadButton(value=json_path, visible=True)
                update[self.dl_csv] = gr.DownloadButton(value=csv_path, visible=True)
            except ClientError as err:
                update[self.people_html] = update[self.people_html] + cards.info_box(
                    f"The report downloads are unavailable: {err}", "warn"
                )
            return update
        if isinstance(message, p.Error):
            body = cards.error_box(message.code, message.message, max_upload_bytes=self.cfg.max_upload_bytes)
            update = {self.status: body, self.result_col: gr.Column(visible=s.provenance is not None)}
            if s.provenance is not None:  # the file's own evidence stays, without a verdict
                update[self.verdict_html] = cards.provenance_card(s.provenance)
            if message.code == "no_model":
                update[self.banner] = cards.no_model_banner()
            if not s.frames:
                update[self.video_col] = gr.Column(visible=False)
                update[self.photo_col] = gr.Column(visible=False)
            return update
        return {}

    def select_frame(self, s: Session | None, evt: gr.SelectData) -> dict[str, Any]:
        """A click on the timeline (or a row of the frame table): show that frame's faces."""
        if s is None or not s.frames:
            return {}
        index = evt.index
        seq = int(index[0] if isinstance(index, (list, tuple)) else index)
        frame = tl.frame_by_seq(s.frames, seq)
        if frame is None:
            return {}
        s.selected_seq = seq
        return {
            self.state: s,
            self.timeline: self.timeline_value(s),
            self.frame_gallery: gr.Gallery(
                value=face_gallery(frame, s.detectors), label=gallery_label(frame, live=False)
            ),
        }
