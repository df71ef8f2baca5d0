"""The Live tab: watch a stream by URL through the server, or push this browser's webcam, and follow
the session as it runs (rolling per-person timeline, current verdicts, counters, notices), then its report.
A mixin of ``ui.app.Page``: ``live_tab()`` builds the components, ``wire_live()`` connects them.

    URL    Start ─▶ watch_url(): ui/live_client.watch() ─coalesced─▶ LiveView ─▶ page updates (≤ 4/s)
           Stop  ─▶ stop_live(): sets the run's stop flag; the server sends the report, watch_url() shows it
    webcam gr.Image(streaming).stream ─▶ webcam_frame(): JPEG + time into the run's FrameFeed ─▶ push()
           a background task folds the messages into the LiveView; a gr.Timer renders it twice a second
           (also after the camera stopped, so the report still arrives); no frame for IDLE_STOP_S ends it
           (Gradio's Image has no "recording stopped" event, and a stream event is not cancellable)

One session per browser tab (a ``LiveRun`` in a ``gr.State``); starting another stops the current one.
Memory is bounded for hours: the view keeps only the last minutes (ui/live_view.py), nothing else is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np

from stream import protocol as p
from ui import cards
from ui import live_view as lv
from ui.address import ServerAddress, ws_url
from ui.client import ClientError
from ui.live import coalesced
from ui.live_client import FrameFeed, jpeg_bytes, push, watch

log = logging.getLogger("dff.ui")

STREAM_EVERY_S = 0.25  # the browser sends a webcam frame this often (the server samples them at its rate)
# Gradio ends a recording once its handler calls have taken this long in all (their processing time, not
# the wall clock): a bound on what one camera can cost the page, far beyond a session's hours here.
WEBCAM_LIMIT_S = 3600
IDLE_STOP_S = 2.0  # no webcam frame for this long: the recording stopped, so the session is stopped
IN_FLIGHT_S = 4 * STREAM_EVERY_S  # after Stop (which stops the camera), later frames are a new recording's
TICK_S = 0.5  # how often the page redraws a webcam session
URL_PLACEHOLDER = "rtsp://… · https://…/index.m3u8 · http://…/stream.ts · udp://@:5000"
LIVE_CSS = """
.dff-live-counters, .dff-session-facts { display: flex; flex-wrap: wrap; gap: 8px 22px; padding: 8px 12px;
  border: 1px solid var(--border-color-primary); border-radius: 8px; margin: 6px 0; }
.dff-kv span { display: block; font-size: 12px; color: var(--body-text-color-subdued); }
.dff-kv b { font-size: 17px; font-variant-numeric: tabular-nums; }
.dff-live-notice { margin: 3px 0; }
"""
# Stop, and Start of a URL, also end the camera's recording (a click on Gradio's own record button, which
# reads "Stop" while recording), so no more frames come; the handler gets its inputs unchanged.
STOP_CAMERA_JS = """(...inputs) => {
  const b = document.querySelector('#dff-webcam button[aria-label="capture photo"]');
  if (b && b.innerText.includes('Stop')) b.click();
  return inputs;
}"""


@dataclass
class LiveRun:
    """One browser tab's live session: its view, and how to end it (``stop`` for a URL, ``feed`` for a
    webcam, whose messages a background ``task`` folds into the view)."""

    view: lv.LiveView
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    feed: FrameFeed | None = None
    task: asyncio.Task[None] | None = None
    started_mono: float = field(default_factory=time.monotonic)
    last_frame_mono: float = 0.0
    last_time_s: float = 0.0
    shown_version: int = -1  # the view version the page shows (the timer redraws only changes)
    superseded: bool = False  # another session of the tab took over: this one no longer draws
    stopped_mono: float | None = None  # when the person pressed Stop (which also stops the camera)

    def request_stop(self, superseded: bool = False, by_user: bool = False) -> None:
        self.superseded = self.superseded or superseded
        if by_user and self.stopped_mono is None:
            self.stopped_mono = time.monotonic()
        self.stop.set()
        if self.feed is not None:
            self.feed.close()
        self.view.stopping()


class LiveTab:
    """Components and handlers of the Live tab (``Page`` supplies ``address``)."""

    address: ServerAddress
    token: gr.Textbox
    live_state: gr.State
    live_timer: gr.Timer

    # ---- layout -----------------------------------------------------------------------------------

    def live_tab(self) -> None:
        self.live_state = gr.State(None)
        self.live_timer = gr.Timer(TICK_S, active=False)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                self.live_url = gr.Textbox(
                    label="Live stream URL", placeholder=URL_PLACEHOLDER, max_lines=1, elem_id="dff-live-url"
                )
                self.live_rate = gr.Number(
                    0,
                    label="Frames analysed per second (0: the server's default)",
                    elem_id="dff-live-rate",
                )
                with gr.Row():
                    self.live_start = gr.Button("Start", variant="primary", elem_id="dff-live-start", min_width=90)
                    self.live_stop = gr.Button("Stop", variant="secondary", elem_id="dff-live-stop", min_width=80)
                self.webcam = gr.Image(
                    sources=["webcam"],
                    streaming=True,
                    type="numpy",
                    label="Or this browser's camera: press Record to analyse it",
                    height=260,
                    elem_id="dff-webcam",
                )
                gr.Markdown(
                    "The server samples the stream at the rate above, newest frame first: when analysis falls "
                    "behind, older frames are dropped (and counted), so verdicts stay current. Sessions are kept "
                    "in History.",
                    elem_classes=["dff-small"],
                )
            with gr.Column(scale=3):
                self.live_status = gr.HTML(
                    cards.info_box("Type a stream URL and press Start, or press Record on the camera."),
                    elem_id="dff-live-status",
                )
                self.live_report = gr.HTML("", elem_id="dff-live-report", css_template=LIVE_CSS, visible=False)
                self.live_people = gr.HTML("", elem_id="dff-live-people")
                self.live_counters = gr.HTML("", elem_id="dff-live-counters", css_template=LIVE_CSS)
                self.live_timeline = gr.HTML("", elem_id="dff-live-timeline")
                self.live_notices = gr.HTML("", elem_id="dff-live-notices", css_template=LIVE_CSS)

    def wire_live(self) -> None:
        views = [self.live_status, self.live_report, self.live_people, self.live_counters, self.live_timeline,
                 self.live_notices]  # fmt: skip
        common: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}
        ins = [self.live_url, self.live_rate, self.token, self.live_state]
        self.live_start.click(self.watch_url, ins, [self.live_state, *views], js=STOP_CAMERA_JS, **common)
        self.live_url.submit(self.watch_url, ins, [self.live_state, *views], js=STOP_CAMERA_JS, **common)
        self.live_stop.click(self.stop_live, [self.live_state], [self.live_status], js=STOP_CAMERA_JS, **common)
        self.webcam.stream(
            self.webcam_frame,
            [self.webcam, self.live_rate, self.token, self.live_state],
            [self.live_state, self.live_timer, *views],
            stream_every=STREAM_EVERY_S,
            time_limit=WEBCAM_LIMIT_S,
            **common,
        )
        self.live_timer.tick(self.live_tick, [self.live_state], [self.live_timer, *views], **common)

    # ---- rendering --------------------------------------------------------------------------------

    def live_updates(self, run: LiveRun) -> dict[Any, Any]:
        """Every Live view component from the run's view."""
        view = run.view
        run.shown_version = view.version
        people = lv.people_html(view) if view.report is None else ""  # the report lists them at the end
        return {
            self.live_status: lv.status_html(view),
            self.live_report: gr.HTML(
                lv.report_html(view.report, view.band, view.overlays) if view.report else "", visible=bool(view.report)
            ),
            self.live_people: gr.HTML(people, visible=bool(people)),
            self.live_counters: lv.counters_html(view) if view.frames_analysed or view.stats else "",
            self.live_timeline: lv.timeline_svg(view) if view.frames_analysed else "",
            self.live_notices: lv.notices_html(view),
        }

    # ---- a URL ------------------------------------------------------------------------------------

    async def watch_url(
        self, url: str | None, rate: float | None, token: str | None, current: LiveRun | None
    ) -> AsyncIterator[dict[Any, Any]]:
        """Start watching ``url`` through the server and stream the page until the report (or an error)."""
        if current is not None:
            current.request_stop(superseded=True)
        url = (url or "").strip()
        run = LiveRun(lv.LiveView(kind="url", name=url))
        if not url:
            run.view.fail("no_url", "")
            yield {self.live_state: run, **self.live_updates(run)}
            return
        yield {self.live_state: run, **self.live_updates(run)}
        try:
            messages = watch(url, ws_url(self.address.get()), stop=run.stop, token=token, options=live_options(rate))
            async for batch in coalesced(messages):
                for message in batch:
                    run.view.apply(message)
                if run.superseded:
                    return  # leaving closes the connection; the server still stores the session
                yield self.live_updates(run)
        except (ClientError, p.ProtocolError) as err:
            run.view.fail(getattr(err, "code", "internal"), str(err))
            yield self.live_updates(run)
        except Exception:  # never a traceback on the page; the server log has it
            log.exception("live session of %s failed in the page", url)
            run.view.fail("internal", "the web page hit an unexpected error")
            yield self.live_updates(run)

    async def stop_live(self, current: LiveRun | None) -> dict[Any, Any]:
        """Stop: the server ends the session and sends its report, which whoever follows the run draws
        (this handler draws nothing then: its reply could land after the report's)."""
        if current is None or current.view.finished:
            return {self.live_status: cards.info_box("Nothing is running.")}
        current.request_stop(by_user=True)
        return {self.live_status: gr.skip()}  # an empty dict would read as one value, not as no update

    # ---- the webcam -------------------------------------------------------------------------------

    async def webcam_frame(
        self, frame: np.ndarray | None, rate: float | None, token: str | None, current: LiveRun | None
    ) -> dict[Any, Any]:
        """One streamed webcam frame: into the current push session, or the first of a new one."""
        now = time.monotonic()
        if frame is None:
            return {self.live_state: gr.skip()}
        run = current
        if run is not None and run.feed is not None and not self._new_recording(run, now):
            if not run.feed.closed:
                await self._feed(run, frame, now)
            run.last_frame_mono = now
            return {self.live_state: gr.skip()}
        if run is not None:
            run.request_stop(superseded=True)
        run = LiveRun(lv.LiveView(kind="webcam", name="webcam"), feed=FrameFeed(), last_frame_mono=now)
        run.task = asyncio.create_task(self._follow_push(run, token, live_options(rate)))
        await self._feed(run, frame, now)
        return {self.live_state: run, self.live_timer: gr.Timer(active=True), **self.live_updates(run)}

    @staticmethod
    def _new_recording(run: LiveRun, now: float) -> bool:
        """Whether a frame begins a new webcam session rather than continuing ``run``'s recording: once
        the run's feed is closed, a frame that comes after Stop stopped the camera (frames still in flight
        aside), or after a gap in the frames (the camera was stopped and started again). Frames of a
        recording that goes on after its session ended (a refusal such as busy) start nothing."""
        assert run.feed is not None
        if not run.feed.closed:
            return False
        if run.stopped_mono is not None:
            return now - run.stopped_mono > IN_FLIGHT_S
        return now - run.last_frame_mono > IDLE_STOP_S

    async def _feed(self, run: LiveRun, frame: np.ndarray, now: float) -> None:
        assert run.feed is not None
        time_s = max(run.last_time_s, now - run.started_mono)  # the page's clock: non-decreasing
        run.last_time_s = time_s
        try:
            data = await asyncio.to_thread(jpeg_bytes, frame)
        except (ValueError, OSError) as err:  # a frame Pillow cannot encode: skip it, the next may do
            log.warning("webcam frame skipped: %s", err)
            return
        run.feed.put(time_s, data)

    async def _follow_push(self, run: LiveRun, token: str | None, options: p.Options) -> None:
        """The webcam session's messages into its view, until Done or Error; ends the feed when the
        recording has sent nothing for IDLE_STOP_S."""
        feed = run.feed
        assert feed is not None

        async def idle_stop() -> None:
            while not feed.closed:
                await asyncio.sleep(IDLE_STOP_S / 4)
                if time.monotonic() - run.last_frame_mono > IDLE_STOP_S:
                    run.request_stop()

        watchdog = asyncio.create_task(idle_stop())
        try:
            async for message in push(feed, ws_url(self.address.get()), token=token, options=options):
                run.view.apply(message)
        except (ClientError, p.ProtocolError) as err:
            run.view.fail(getattr(err, "code", "internal"), str(err))
        except Exception:
            log.exception("webcam session failed in the page")
            run.view.fail("internal", "the web page hit an unexpected error")
        finally:
            feed.close()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if not run.view.finished:  # the connection ended without a report (the page is going away)
                run.view.fail("connection_lost", "the session ended without a report")

    async def live_tick(self, current: LiveRun | None) -> dict[Any, Any]:
        """The timer: redraw a webcam session when it changed; stop ticking once its end is drawn."""
        if current is None or current.feed is None:
            return {self.live_timer: gr.Timer(active=False)}
        update: dict[Any, Any] = {self.live_timer: gr.skip()}
        if current.view.version != current.shown_version:
            update.update(self.live_updates(current))
        if current.view.finished and current.task is not None and current.task.done():
            update[self.live_timer] = gr.Timer(active=False)
        return update


def live_options(rate: float | None) -> p.Options:
    """A live session's options: the rate (None = the server's), overlays for the people's thumbnails."""
    # an empty box arrives as None or 0: the server's rate; a rate over the cap is the server's bad_config
    return p.Options(rate_hz=float(rate) if rate and rate > 0 else None, overlays=True)
