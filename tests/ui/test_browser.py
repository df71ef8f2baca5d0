"""The web page end to end in headless Chromium: the real server (the app ``dff serve`` builds, UI mounted)
on port 0 with a tiny random checkpoint, files uploaded through the page, results read from the DOM.

Screenshots of each state go to the test's tmp_path (and to docs/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.media import face_scene, moving_faces_clip
from tests.servers import Served
from tests.ui.conftest import copy_checkpoint, start_ui_server

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # Gradio's own pandas deprecations
]

CLIP_S, CLIP_FPS, CLIP_FACES = 8.0, 10, 3  # 20 sampled frames: several page updates on any machine
EVERY_S = 0.4  # set through the page's Options panel (the server's default is 0.5)
POINTS = "#dff-timeline circle.pt, #dff-timeline rect.nf"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server is never proxied


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ui_media")
    photo = d / "three_faces.png"
    Image.fromarray(face_scene(640, 360, [(20, 60, 150), (240, 90, 150), (440, 60, 150)])).save(photo)
    # a document, not media (note: FFmpeg reads some plain .txt files as "tty" ANSI-art video)
    notes = d / "minutes.pdf"
    notes.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" * 20)
    return {
        "clip": moving_faces_clip(d / "three_people.mp4", seconds=CLIP_S, fps=CLIP_FPS, n_faces=CLIP_FACES),
        "photo": photo,
        "notes": notes,
    }


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, checkpoint_dir) -> Iterator[Served]:
    served = start_ui_server(tmp_path_factory.mktemp("ui_server"), checkpoint_dir)
    try:
        yield served
    finally:
        served.stop()


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#dff-upload input[type=file]", state="attached")
    page.wait_for_selector("#dff-banner [data-status]", state="attached")  # the page's load handler ran


def upload(page: Any, path: Path) -> None:
    """Drop a file on the upload box (clearing the previous one first)."""
    clear = page.locator("#dff-upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.set_input_files("#dff-upload input[type=file]", str(path))


def distinct_points(page: Any) -> int:
    """Sampled frames drawn on the timeline (a point per face, a grey tick for a frame without one)."""
    return page.eval_on_selector_all(POINTS, "els => new Set(els.map(e => e.dataset.seq)).size")


# Records, on every DOM change, the fewest (non-zero) timeline points drawn while no verdict was shown: a partial
# timeline that the page drew for less time than one poll of the test's loop still counts (the poll alone raced
# on CI). The last update draws the whole timeline a moment before the verdict card, so the maximum says nothing.
_WATCH_PARTIAL = """([points, verdict]) => {
  window.__dffPartial = 0;
  new MutationObserver(() => {
    if (document.querySelector(verdict)) return;
    const n = new Set([...document.querySelectorAll(points)].map(e => e.dataset.seq)).size;
    if (n && (!window.__dffPartial || n < window.__dffPartial)) window.__dffPartial = n;
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def download(page: Any, selector: str) -> bytes:
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_bytes()


def assert_no_traceback(page: Any) -> None:
    text = page.inner_text("body")
    assert "Traceback" not in text and 'File "' not in text


def test_video_streams_a_live_timeline_then_the_verdict(page, ui_server, files, shoot):
    open_page(page, ui_server.url)
    assert page.locator("#dff-banner .dff-banner").count() == 0, "a model is loaded: no banner"
    shoot("01-start")

    page.click("#dff-options")  # the collapsed Options panel
    every = page.locator("#dff-every-s input")
    every.fill(str(EVERY_S))
    every.press("Tab")
    # Gradio commits a Number's value on blur, asynchronously; the summary line is redrawn by the server from
    # the committed values, so once it shows the new value an upload carries it too (no sleep, no race).
    page.wait_for_selector(f"#dff-options-summary [data-every-s='{EVERY_S:g}']", timeout=30_000)
    assert f"every {EVERY_S:g} s" in page.inner_text("#dff-options-summary")
    page.evaluate(_WATCH_PARTIAL, [POINTS, "#dff-verdict .dff-verdict"])
    upload(page, files["clip"])

    # poll the DOM while the video is analysed: points must appear before the verdict does
    partial_seen = 0
    deadline = time.monotonic() + 180
    while not page.locator("#dff-verdict .dff-verdict").count():
        assert time.monotonic() < deadline, "no verdict within 180 s"
        assert not page.locator("#dff-status .dff-error").count(), page.inner_text("#dff-status")
        n = distinct_points(page)
        # the screenshot: the first partial timeline, replaced by one a few frames in when there is time
        if (n and not partial_seen) or (partial_seen < 3 <= n):
            if not page.locator("#dff-verdict .dff-verdict").count():
                partial_seen = n
                shoot("02-video-live")
        time.sleep(0.1)
    first_drawn = page.evaluate("window.__dffPartial")
    assert 0 < first_drawn < round(CLIP_S / EVERY_S), (
        f"the timeline first showed {first_drawn} frames: it must show some while the video is still analysed"
    )

    report = json.loads(download(page, "#dff-dl-json"))
    assert report["schema"] == "dff.report/1"
    assert report["media"]["name"] == files["clip"].name
    assert report["policy"]["every_s"] == pytest.approx(EVERY_S), "the Options panel reached the server"
    n_frames, n_people = report["summary"]["n_frames"], report["summary"]["n_people"]
    assert n_frames == round(CLIP_S / EVERY_S)
    assert distinct_points(page) == n_frames, "a timeline point for every sampled frame"
    assert page.locator("#dff-timeline g.person").count() == n_people == CLIP_FACES, "one line per person"
    legend = page.locator("#dff-timeline .dff-legend .lg-item[data-track]").all_inner_texts()
    assert legend == [f"Person {i + 1}" for i in range(CLIP_FACES)]
    rows = list(csv.reader(io.StringIO(download(page, "#dff-dl-csv").decode())))
    assert rows[0][:3] == ["file", "frame_index", "time_s"] and len(rows) == 1 + report["summary"]["n_faces"]

    verdict = page.locator("#dff-verdict .dff-verdict")
    assert verdict.get_attribute("data-label") == report["label"]
    # the Options panel left the threshold to the server; the card says which operating point it used
    assert report["threshold_source"] in ("settings", "default", "model card")
    assert page.locator("#dff-verdict .dff-v-thr-src").get_attribute("data-source") == report["threshold_source"]
    assert "not proof" in verdict.inner_text()
    assert page.locator("#dff-people .dff-person").count() == n_people
    assert page.locator("#dff-people img.dff-thumb").count() == n_people, "a Grad-CAM thumbnail per person"
    assert page.locator("#dff-status").inner_text().startswith("Done")
    shoot("03-video-done")

    # click a point: that frame's faces and heatmaps
    seq = n_frames - 2
    frame = report["frames"][seq]
    page.locator(f"#dff-timeline circle.pt[data-seq='{seq}']").first.click(force=True)
    page.wait_for_selector(f"#dff-timeline circle.pt[data-seq='{seq}'][r='6']")  # drawn as selected
    page.wait_for_function(
        "t => document.querySelector('#dff-faces').innerText.includes(t)", arg=f"frame {frame['index']} at"
    )
    assert page.locator("#dff-faces img").count() >= len(frame["faces"])
    shoot("04-video-frame-selected")
    assert_no_traceback(page)


def test_photo_boxes_every_face_with_its_heatmap(page, ui_server, files, shoot):
    open_page(page, ui_server.url)
    upload(page, files["photo"])
    page.wait_for_selector("#dff-verdict .dff-verdict", timeout=120_000)
    report = json.loads(download(page, "#dff-dl-json"))
    assert report["media"]["is_image"] is True
    n_faces = report["summary"]["n_faces"]
    assert n_faces == 3
    assert page.locator("#dff-photo .legend-item").count() == n_faces, "a labelled box per face"
    assert page.locator("#dff-photo img.mask").count() == n_faces
    page.wait_for_function("n => document.querySelectorAll('#dff-heatmaps img').length >= n", arg=n_faces)
    assert not page.locator("#dff-timeline").is_visible(), "a photo has no timeline"
    assert "P(fake)" in page.locator("#dff-photo .legend-item").first.inner_text()
    shoot("05-photo")


def test_unsupported_file_shows_a_clear_error_and_the_page_stays_usable(page, ui_server, files, shoot):
    open_page(page, ui_server.url)
    upload(page, files["notes"])
    error = page.wait_for_selector("#dff-status .dff-error")
    assert error.get_attribute("data-code") in ("unsupported_media", "bad_media")
    assert "Upload a photo" in error.inner_text()
    assert_no_traceback(page)
    shoot("06-unsupported-file")

    upload(page, files["photo"])  # the same page analyses the next file
    page.wait_for_selector("#dff-verdict .dff-verdict", timeout=120_000)
    assert not page.locator("#dff-status .dff-error").count()


def test_history_reopens_a_report_with_its_timeline(page, ui_server, files, shoot):
    from stream import protocol as p
    from ui.client import analyze_file

    async def run() -> list[p.Message]:
        return [m async for m in analyze_file(files["clip"], ui_server.ws, options=p.Options(every_s=1.0))]

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        done = pool.submit(asyncio.run, run()).result()[-1]
    assert isinstance(done, p.Done)
    open_page(page, ui_server.url)
    page.get_by_role("tab", name="History").click()
    row = page.locator("#dff-history .virtual-row", has_text=done.job_id)  # Gradio's virtualised table rows
    row.wait_for()
    shoot("07-history")
    row.locator(".body-cell").nth(1).click()
    page.wait_for_selector("#dff-verdict .dff-verdict")
    assert page.get_by_role("tab", name="Analyze").get_attribute("aria-selected") == "true"
    assert distinct_points(page) == len(done.report.frames)
    assert page.locator("#dff-timeline g.person").count() == len(done.report.tracks)
    assert "Reopened from History" in page.inner_text("#dff-status")
    assert json.loads(download(page, "#dff-dl-json"))["media"]["sha256"] == done.report.media.sha256
    shoot("08-history-reopened")


def test_no_model_banner_then_install_and_activate_from_the_models_tab(page, tmp_path, checkpoint_dir, shoot):
    from playwright.sync_api import expect

    served = start_ui_server(tmp_path / "data", tmp_path / "empty_models")
    try:
        open_page(page, served.url)
        banner = page.wait_for_selector("#dff-banner .dff-banner-nomodel")
        assert "Models" in banner.inner_text()
        shoot("09-no-model")

        page.get_by_role("tab", name="Models").click()
        assert "listens only on this machine" in page.inner_text("#dff-auth-note")
        ckpt = copy_checkpoint(checkpoint_dir, tmp_path / "upload" / "tiny-random.pth")
        page.set_input_files("#dff-model-file input[type=file]", str(ckpt))
        expect(page.locator("#dff-model-name").get_by_role("textbox")).to_have_value("tiny-random.pth")
        page.click("#dff-install")
        page.wait_for_selector("#dff-models-msg .dff-note-ok", timeout=180_000)
        assert "Installed tiny-random.pth" in page.inner_text("#dff-models-msg")
        page.click("#dff-activate")
        page.wait_for_function(
            "() => document.querySelector('#dff-models-msg').innerText.includes('is now the model')", timeout=180_000
        )
        page.wait_for_selector("#dff-banner .dff-banner-nomodel", state="detached")
        assert "✓ active" in page.inner_text("#dff-models")
        shoot("10-models")
    finally:
        served.stop()


def test_a_server_with_a_token_asks_for_it_on_the_page(page, tmp_path, checkpoint_dir, files, shoot):
    served = start_ui_server(tmp_path / "data", checkpoint_dir, token="s3cret-token")
    try:
        open_page(page, served.url)
        token = page.locator("#dff-token input[type=password]")
        assert token.is_visible()
        upload(page, files["photo"])
        error = page.wait_for_selector("#dff-status .dff-error[data-code='unauthorized']")
        assert "Access token needed" in error.inner_text()
        assert_no_traceback(page)
        shoot("11-token-required")

        token.fill("s3cret-token")
        token.press("Enter")
        page.click("#dff-run")
        page.wait_for_selector("#dff-verdict .dff-verdict", timeout=120_000)
        page.get_by_role("tab", name="Models").click()
        assert "requires its access token" in page.inner_text("#dff-auth-note")
        page.wait_for_function("() => document.querySelector('#dff-models').innerText.includes('tiny-random.pth')")
    finally:
        served.stop()


def test_stop_cancels_the_analysis_on_the_server(page, ui_server, files):
    open_page(page, ui_server.url)
    page.click("#dff-options")
    every = page.locator("#dff-every-s input")
    every.fill("0.2")  # 20 frames: long enough to stop half-way
    every.dispatch_event("input")
    every.dispatch_event("change")
    every.press("Tab")
    # Gradio commits a Number's value to its store on blur, asynchronously: under CPU load an upload
    # fired at once can still carry the old value.
    page.wait_for_timeout(700)
    upload(page, files["clip"])
    page.wait_for_selector("#dff-timeline circle.pt")
    page.click("#dff-stop")
    page.wait_for_selector("#dff-status .dff-note-warn")
    assert "Stopped" in page.inner_text("#dff-status")

    def latest() -> dict[str, Any]:
        with _NO_PROXY.open(ui_server.url + "v1/reports?limit=1", timeout=30) as response:
            return json.loads(response.read())["reports"][0]

    job = latest()
    deadline = time.monotonic() + 10
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = latest()
    assert job["name"] == files["clip"].name and job["status"] == "cancelled"
    assert not page.locator("#dff-verdict .dff-verdict").is_visible()
