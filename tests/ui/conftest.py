"""The real server with the web UI mounted (what ``dff serve`` builds), on port 0 in this process, and a
headless Debian Chromium driven by Playwright. Both skip with a reason when the browser is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Served, make_settings, start_server

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # the page must work offline: no host name resolves (the server is dialled by IP). Not page.route():
    # an intercepted response is buffered, which would hold back Gradio's event stream.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--no-proxy-server",
]
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
# Read at import, before the autouse fixture clears DFF_* variables: refresh docs/screenshots/ too.
UPDATE_DOCS = os.environ.get("UPDATE_SCREENSHOTS") == "1"


def start_ui_server(data_dir: Path, models_dir: Path, **overrides: Any) -> Served:
    """``create_app`` + ``mount_web_ui`` + ``make_server``, exactly as ``dff serve`` composes them."""
    settings = make_settings(data_dir, models_dir, **{"shutdown_grace_s": 5.0, **overrides})
    return start_server(settings, web_ui=True, start_timeout_s=180.0)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Skip unless Playwright and a system Chromium are present (CI installs Debian's ``chromium``)."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e .[dev])")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (Playwright cannot download one here)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(60_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def shoot(page: Any, tmp_path: Path):
    """``shoot("video-live")`` saves a full-page PNG under tmp_path (and in docs/screenshots/ with
    UPDATE_SCREENSHOTS=1, as a small 256-colour PNG)."""

    def take(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if UPDATE_DOCS:
            from PIL import Image

            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as img:
                img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
                    DOCS_SCREENSHOTS / f"{name}.png", optimize=True
                )
        return path

    return take


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """A models directory with a tiny random checkpoint whose scores depend on the face."""
    from pipeline.models import save_checkpoint
    from tests.weights import calibrated_model

    directory = tmp_path_factory.mktemp("ui_models")
    save_checkpoint(calibrated_model(), directory / "tiny-random.pth")
    return directory


def copy_checkpoint(src_dir: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(next(src_dir.glob("*.pth")), dst)
    return dst
