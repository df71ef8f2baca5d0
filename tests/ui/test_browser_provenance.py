"""The Provenance card in headless Chromium, on the real server (tests/ui/conftest.py, helpers of
tests/ui/test_browser.py): beside the verdict for a signed face photo (untrusted: the test's own chain is on
no trust list) and a tampered one (INVALID), there from ``accepted`` on (before the verdict of a signed
video), and again in a report reopened from History. Screenshot: docs/screenshots/12-provenance.png with
UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.c2pa_kit import ISSUER, SIGNER, make_chain, sign, tamper_pixels
from tests.media import astronaut, moving_faces_clip
from tests.servers import Served
from tests.ui.conftest import start_ui_server
from tests.ui.test_browser import assert_no_traceback, download, open_page, upload

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # Gradio's own pandas deprecations
]

VERDICT, CARD = "#dff-verdict .dff-verdict", "#dff-verdict .dff-prov"
# Records whether the Provenance card was on the page while no verdict was (it comes with ``accepted``).
_WATCH_CARD = """([card, verdict]) => {
  window.__dffCardFirst = false;
  new MutationObserver(() => {
    if (document.querySelector(card) && !document.querySelector(verdict)) window.__dffCardFirst = true;
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A face photo from a "camera" with an editor's software tag, signed with the test chain; the same
    with a bit of its pixels flipped; a signed 3 s video of a face."""
    d = tmp_path_factory.mktemp("provenance_ui_media")
    chain = make_chain()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS R5", "Adobe Photoshop 25.0"  # make, model, software
    Image.fromarray(astronaut()).save(d / "portrait.jpg", quality=92, exif=exif)
    signed = sign(d / "portrait.jpg", d / "signed_portrait.jpg", chain)
    clip = moving_faces_clip(d / "clip.mp4", seconds=3.0, fps=10, n_faces=1)
    return {
        "signed": signed,
        "tampered": tamper_pixels(signed, d / "tampered_portrait.jpg"),
        "video": sign(clip, d / "signed_clip.mp4", chain),
    }


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, checkpoint_dir) -> Iterator[Served]:
    served = start_ui_server(tmp_path_factory.mktemp("provenance_ui_server"), checkpoint_dir)
    try:
        yield served
    finally:
        served.stop()


def analyse(page: Any, path: Path) -> Any:
    """Upload ``path`` on the page and wait for its verdict; the Provenance card's locator."""
    upload(page, path)
    page.wait_for_selector(VERDICT, timeout=120_000)
    assert not page.locator("#dff-status .dff-error").count(), page.inner_text("#dff-status")
    return page.locator(CARD)


def test_a_signed_photo_shows_its_untrusted_signer_beside_the_verdict(page, ui_server, files, shoot):
    open_page(page, ui_server.url)
    card = analyse(page, files["signed"])
    assert card.get_attribute("data-state") == "untrusted"
    assert card.locator(".dff-prov-badge").inner_text() == "Signed — signer not on the trust list"
    shown = card.inner_text()
    assert SIGNER in shown and ISSUER in shown and "dff-test 1.0" in shown
    assert "trainedAlgorithmicMedia" in shown and "signingCredential.untrusted" in shown
    assert "Adobe Photoshop 25.0" in card.locator("[data-flag='editor_software']").inner_text()
    assert "Canon EOS R5" in card.locator(".dff-prov-tags").inner_text()
    assert "never part of P(fake)" in shown
    verdict_box, card_box = page.locator(VERDICT).bounding_box(), card.bounding_box()
    assert card_box["x"] >= verdict_box["x"] + verdict_box["width"] - 1, "beside the verdict, not under it"
    assert abs(card_box["y"] - verdict_box["y"]) < 2
    report = json.loads(download(page, "#dff-dl-json"))
    assert report["provenance"]["c2pa"]["state"] == "untrusted"
    assert card.locator(".dff-prov-summary").inner_text() == report["provenance"]["summary"]
    assert_no_traceback(page)
    shoot("12-provenance")


def test_a_tampered_photo_is_invalid_and_stays_so_when_reopened_from_history(page, ui_server, files):
    open_page(page, ui_server.url)
    card = analyse(page, files["tampered"])
    assert card.get_attribute("data-state") == "invalid"
    assert card.locator(".dff-prov-badge").inner_text() == "Content credentials INVALID"
    assert "assertion.dataHash.mismatch" in card.locator("[data-section='checks']").inner_text()

    open_page(page, ui_server.url)  # a fresh page lists the reports in History
    page.get_by_role("tab", name="History").click()
    row = page.locator("#dff-history .virtual-row", has_text=files["tampered"].name).first
    row.wait_for()
    row.locator(".body-cell").nth(1).click()
    page.wait_for_selector(VERDICT)
    assert "Reopened from History" in page.inner_text("#dff-status")
    assert page.locator(CARD).get_attribute("data-state") == "invalid"
    assert SIGNER in page.locator(CARD).inner_text()


def test_the_card_comes_with_accepted_before_the_verdict_and_stays(page, ui_server, files):
    open_page(page, ui_server.url)
    page.evaluate(_WATCH_CARD, [CARD, VERDICT])
    card = analyse(page, files["video"])
    assert page.evaluate("window.__dffCardFirst"), "the card was shown while the frames were still analysed"
    assert card.get_attribute("data-state") == "untrusted"
    assert "container" in card.locator(".dff-prov-tags").inner_text(), "the mp4's container tags"
    assert page.locator("#dff-timeline circle.pt").count(), "the video's timeline is there too"
