"""The Live tab end to end in headless Chromium against the real server (UI mounted, tiny random checkpoint):
a loopback MPEG-TS-over-HTTP stream watched by URL, and the browser's webcam — Chromium's fake camera
playing a .y4m of synthetic faces this test writes — pushed frame by frame. Verdicts, counters and the
session report are read from the DOM; screenshots go to tmp_path (docs/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.livemedia import LiveClip, TsHttpServer
from tests.servers import Served
from tests.ui.conftest import CHROMIUM_ARGS, start_ui_server

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),
]

CLIP = LiveClip(width=320, height=240, fps=10, n_faces=2, face_px=110)
WAIT_MS = 60_000  # every wait on the page is bounded by this


def write_y4m(path: Path, clip: LiveClip, n_frames: int) -> Path:
    """A YUV4MPEG2 file (4:2:0, what Chromium's fake camera plays in a loop) of ``clip``'s first frames."""
    w, h = clip.width, clip.height
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F{clip.fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(n_frames):
            ycc = np.asarray(Image.fromarray(clip.frame(i)).convert("YCbCr"), dtype=np.float32)
            chroma = ycc[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3)).round().astype(np.uint8)
            out.write(b"FRAME\n")
            out.write(ycc[:, :, 0].astype(np.uint8).tobytes())
            out.write(chroma[:, :, 0].tobytes())  # Cb plane, then Cr
            out.write(chroma[:, :, 1].tobytes())
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: Path, tmp_path_factory) -> Iterator[Any]:
    """Overrides conftest's: the same headless Chromium, with a fake camera that plays our faces."""
    from playwright.sync_api import sync_playwright

    y4m = write_y4m(tmp_path_factory.mktemp("camera") / "faces.y4m", CLIP, CLIP.cycle)
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",  # grants the camera without a prompt
        f"--use-file-for-fake-video-capture={y4m}",
    ]
    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(chromium_path), args=args)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, checkpoint_dir) -> Iterator[Served]:
    served = start_ui_server(tmp_path_factory.mktemp("ui_live"), checkpoint_dir, live_rate_hz=2.0)
    try:
        yield served
    finally:
        served.stop()


def open_live_tab(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#dff-banner [data-status]", state="attached", timeout=WAIT_MS)  # the load handler ran
    page.get_by_role("tab", name="Live").click()
    page.wait_for_selector("#dff-live-url input, #dff-live-url textarea", timeout=WAIT_MS)


def wait_for_people(page: Any, n_frames: int) -> None:
    """Until at least ``n_frames`` analysed frames are counted and someone's verdict is shown."""
    page.wait_for_function(
        """n => {
          const c = document.querySelector('#dff-live-counters .dff-live-counters');
          return c && Number(c.dataset.analysed) >= n && document.querySelector('#dff-live-people .dff-live-person');
        }""",
        arg=n_frames,
        timeout=WAIT_MS,
    )


def assert_live_view(page: Any) -> None:
    """Per-person verdicts, their timeline lines and the counters, as the page shows them now."""
    people = page.locator("#dff-live-people .dff-live-person")
    assert people.count() >= 1
    for i in range(people.count()):
        person = people.nth(i)
        assert person.get_attribute("data-label") in ("real", "fake", "inconclusive")
        assert "P(fake) 0." in person.inner_text() or "P(fake) 1." in person.inner_text()
    tracks = {people.nth(i).get_attribute("data-track") for i in range(people.count())}
    lines = page.locator("#dff-live-timeline svg.dff-live-timeline g.person")
    assert tracks <= {lines.nth(i).get_attribute("data-track") for i in range(lines.count())}
    counters = page.locator("#dff-live-counters .dff-live-counters")
    assert int(counters.get_attribute("data-analysed")) >= 1
    assert counters.get_attribute("data-lag"), "the verdict lag is shown"
    assert "Frames analysed" in counters.inner_text() and "Reconnects" in counters.inner_text()
    assert page.locator("#dff-live-status .dff-status").get_attribute("data-stage") == "Live"


def assert_no_traceback(page: Any, capsys: Any) -> None:
    """Neither on the page nor in the server's log (Gradio prints a failed handler's traceback there)."""
    text = page.inner_text("body")
    assert "Traceback" not in text and 'File "' not in text
    logged = capsys.readouterr().err
    assert "Traceback" not in logged, logged[-3000:]


def test_a_stream_url_shows_verdicts_and_counters_while_it_runs_then_the_session_report(page, ui_server, shoot, capsys):
    with TsHttpServer(CLIP) as stream:  # endless MPEG-TS over HTTP at real time
        open_live_tab(page, ui_server.url)
        page.locator("#dff-live-url input, #dff-live-url textarea").first.fill(stream.url())
        page.click("#dff-live-start")
        wait_for_people(page, 3)
        assert_live_view(page)
        notices = page.locator("#dff-live-notices .dff-live-notice[data-kind='connected']")
        assert notices.count() == 1 and "Connected" in notices.inner_text()
        shoot("12-live-url")
        page.click("#dff-live-stop")
        report = page.wait_for_selector("#dff-live-report .dff-live-report", timeout=WAIT_MS)
    assert report.get_attribute("data-end") == "stopped"
    assert report.get_attribute("data-label") in ("real", "fake", "inconclusive")
    facts = page.inner_text("#dff-live-report .dff-session-facts")
    for fact in ("Started", "Stopped", "Frames analysed", "Verdict lag", "p50", "p95"):
        assert fact in facts
    assert page.locator("#dff-live-report .dff-person").count() >= 1, "the report's people"
    assert page.locator("#dff-live-status .dff-status").get_attribute("data-stage") == "Ended"
    assert_no_traceback(page, capsys)
    shoot("13-live-url-report")

    page.get_by_role("tab", name="History").click()
    page.click("text=Refresh")
    row = page.locator("#dff-history .virtual-row", has_text=stream.url())
    row.wait_for(timeout=WAIT_MS)
    assert "live" in row.inner_text().split()


def test_a_url_the_server_will_not_open_is_a_clear_error(page, ui_server, capsys):
    open_live_tab(page, ui_server.url)
    page.locator("#dff-live-url input, #dff-live-url textarea").first.fill("file:///etc/passwd")
    page.click("#dff-live-start")
    error = page.wait_for_selector("#dff-live-status .dff-error", timeout=WAIT_MS)
    assert error.get_attribute("data-code") == "unsupported_source"
    assert "cannot be watched" in error.inner_text()
    assert_no_traceback(page, capsys)


def camera_button(page: Any) -> Any:
    """Gradio's record button on the webcam: it reads "Record", and "Stop" while recording."""
    return page.locator("#dff-webcam button[aria-label='capture photo']")


def wait_for_new_session(page: Any) -> None:
    """Until the page shows a running session again: no report, someone's verdict, frames counted."""
    page.wait_for_selector("#dff-live-report .dff-live-report", state="detached", timeout=WAIT_MS)
    wait_for_people(page, 2)


def test_the_webcam_streams_frames_to_the_server_and_verdicts_arrive(page, ui_server, shoot, capsys):
    open_live_tab(page, ui_server.url)
    page.click("#dff-webcam [title='grant webcam access'] button", timeout=WAIT_MS)
    record = camera_button(page)
    record.wait_for(timeout=WAIT_MS)
    record.click()  # Gradio streams frames to the page's handler, which pushes them to the server
    wait_for_people(page, 3)
    assert_live_view(page)
    assert "Webcam" in page.inner_text("#dff-live-status")
    shoot("14-live-webcam")

    page.click("#dff-live-stop")  # ends the session and the camera's recording
    report = page.wait_for_selector("#dff-live-report .dff-live-report", timeout=WAIT_MS)
    assert report.get_attribute("data-end") == "stopped"
    page.wait_for_function("b => b.innerText.includes('Record')", arg=record.element_handle(), timeout=WAIT_MS)
    shoot("15-live-webcam-report")

    record.click()  # a new recording is a new session
    wait_for_new_session(page)
    assert "Webcam" in page.inner_text("#dff-live-status")
    record.click()  # the camera's own stop: no frame comes, so the page stops the session and shows its report
    report = page.wait_for_selector("#dff-live-report .dff-live-report", timeout=WAIT_MS)
    assert report.get_attribute("data-end") == "stopped"

    with TsHttpServer(CLIP) as stream:
        record.click()
        wait_for_new_session(page)
        page.locator("#dff-live-url input, #dff-live-url textarea").first.fill(stream.url())
        page.click("#dff-live-start")  # a URL takes over the tab's session, and stops the camera
        page.wait_for_function("b => b.innerText.includes('Record')", arg=record.element_handle(), timeout=WAIT_MS)
        page.wait_for_function(
            "u => document.querySelector('#dff-live-status').innerText.includes(u)", arg=stream.url(), timeout=WAIT_MS
        )
        wait_for_new_session(page)
        page.click("#dff-live-stop")
        page.wait_for_selector("#dff-live-report .dff-live-report", timeout=WAIT_MS)
    assert stream.url() in page.inner_text("#dff-live-report")
    assert_no_traceback(page, capsys)
