"""``dff models get`` against loopback HTTP servers made here (no other network): the install, its card,
and every way a download can go wrong leaving nothing installed and no temporary file behind. The real
MesoNet files are served from ../shared when present."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.detectors import catalog
from pipeline.detectors.catalog import CATALOG, URL_LAYOUT, Published
from pipeline.models import card_path, read_card, read_card_facts
from tests.media import SHARED
from ui import cards, models_get
from ui.cli import main
from ui.models_get import DownloadError, Pin, install

LOOPBACK = "127.0.0.1"
JOIN_S = 5.0
NAME = "mesonet4-df"


@dataclass
class Route:
    """What the server answers for one path: ``body`` (with a Content-Length unless ``send_length`` is
    False), ``endless`` bytes until the client leaves, or one byte every ``trickle_s``."""

    body: bytes = b""
    send_length: bool = True
    endless: bool = False
    trickle_s: float = 0.0


class PinServer:
    """A threaded HTTP server on 127.0.0.1 answering ``routes`` (path -> Route; 404 for the rest).
    ``asked``: the paths requested; ``sent``: bytes of body written per request."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.asked: list[str] = []
        self.sent: list[int] = []
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:
                outer.asked.append(self.path)
                route = outer.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if route.send_length and not route.endless:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                sent = 0
                try:
                    if route.endless:
                        block = b"\0" * 65536
                        while not outer.stop.is_set() and sent < 1 << 30:
                            self.wfile.write(block)
                            sent += len(block)
                    elif route.trickle_s:
                        for i in range(len(route.body)):
                            if outer.stop.wait(route.trickle_s):
                                break
                            self.wfile.write(route.body[i : i + 1])
                            self.wfile.flush()
                            sent += 1
                    else:
                        self.wfile.write(route.body)
                        sent = len(route.body)
                except OSError:  # the client stopped reading and left
                    pass
                outer.sent.append(sent)

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(JOIN_S)


def url_path(entry: Published) -> str:
    return "/" + URL_LAYOUT.format(repo=entry.repository, commit=entry.commit, path=entry.path)


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, Route]], PinServer]]:
    servers: list[PinServer] = []

    def start(routes: dict[str, Route]) -> PinServer:
        servers.append(PinServer(routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> tuple[Published, bytes]:
    """``mesonet4-df`` re-pinned to bytes made here (so these tests need no ../shared)."""
    data = random.Random(13).randbytes(150_000)
    entry = dataclasses.replace(CATALOG[NAME], size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(CATALOG, NAME, entry)
    return entry, data


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _get(base: str, models: Path, *extra: str) -> tuple[int, str, str]:
    return _run("models", "get", NAME, "--dir", str(models), "--base-url", base, "--timeout-s", "5", *extra)


def _left(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


def test_get_installs_the_file_and_a_card_the_service_accepts(serve, made, tmp_path: Path) -> None:
    entry, data = made
    server = serve({url_path(entry): Route(data)})
    models = tmp_path / "models"
    code, out, err = _get(server.base, models)
    assert code == 0, err
    installed = models / "Meso4_DF.h5"
    assert installed.read_bytes() == data and _left(models) == ["Meso4_DF.h5", "Meso4_DF.h5.card.json"]
    assert out.startswith(f"installed {NAME}: {installed}")
    assert f"dff scan FILE --checkpoint {installed}" in out and "newest model" in out
    facts = read_card_facts(installed, entry.sha256)
    assert facts is not None and facts.name == NAME and facts.threshold is None and facts.temperature == 1.0
    card = read_card(installed)
    assert card is not None and card["source"]["url"] == server.base + url_path(entry)
    assert card["preprocess"]["name"] == "meso-256" and card["detector"] == "mesonet4"
    assert server.asked == [url_path(entry)]

    code, out, _ = _run("models", "--dir", str(models))  # the plain listing, as before, shows it with its card
    assert code == 0 and "* Meso4_DF.h5" in out and f"name: {NAME}" in out


def test_get_again_is_already_installed_and_keeps_the_card(serve, made, tmp_path: Path) -> None:
    entry, data = made
    server = serve({url_path(entry): Route(data)})
    assert _get(server.base, tmp_path)[0] == 0
    card = card_path(tmp_path / entry.file_name)
    card.write_text(card.read_text().replace('"metrics": []', '"metrics": [{"kept": true}]'))
    code, out, err = _get(server.base, tmp_path)
    assert code == 0, err
    assert out.startswith(f"already installed {NAME}") and "kept" in out
    assert '"kept": true' in card.read_text() and len(server.asked) == 1  # nothing downloaded the second time


def test_base_url_from_the_environment_and_proxies_skipped_for_loopback(
    serve, made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, data = made
    server = serve({url_path(entry): Route(data)})
    with socket.socket() as s:  # a port nothing listens on: a proxy there would refuse every request
        s.bind((LOOPBACK, 0))
        dead = f"http://{LOOPBACK}:{s.getsockname()[1]}"
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, dead)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DFF_MODELS_BASE_URL", server.base + "/")
    code, _, err = _run("models", "get", NAME, "--dir", str(tmp_path), "--timeout-s", "5")
    assert code == 0, err
    assert (tmp_path / entry.file_name).read_bytes() == data


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param("wrong", "SHA-256 mismatch", id="same-size-other-bytes"),
        pytest.param("short", "got 1000 bytes, the pinned file has 150000", id="truncated"),
        pytest.param("long-announced", "announces 150001 bytes", id="too-long-announced"),
        pytest.param("endless", "more than the pinned 150000 bytes; stopped reading", id="too-long-unannounced"),
        pytest.param("missing", "HTTP 404", id="not-found"),
    ],
)
def test_bad_downloads_install_nothing(serve, made, tmp_path: Path, route: str, message: str) -> None:
    entry, data = made
    other = bytes(b ^ 1 for b in data)
    routes = {
        "wrong": Route(other),
        "short": Route(data[:1000]),
        "long-announced": Route(data + b"x"),
        "endless": Route(endless=True),
    }
    server = serve({url_path(entry): routes[route]} if route in routes else {})
    started = time.monotonic()
    code, out, err = _get(server.base, tmp_path / "models")
    assert code == 1 and out == ""
    assert message in err and "nothing installed" in err and err.count("\n") == 2  # the URL line, the error
    assert _left(tmp_path / "models") == []  # no file, no card, no temporary file
    assert time.monotonic() - started < 10
    if route == "endless":
        server.close()  # joins the handler's loop: it stopped because the client left
        assert server.sent and server.sent[0] < 1 << 30


def test_a_server_that_never_answers_times_out(tmp_path: Path, made) -> None:
    entry, _ = made
    with socket.socket() as listener:  # the kernel completes the handshake; nobody ever answers
        listener.bind((LOOPBACK, 0))
        listener.listen(4)
        url = f"http://{LOOPBACK}:{listener.getsockname()[1]}/x.h5"
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"no answer within 0\.5 s"):
            install(Pin(url, entry.size_bytes, entry.sha256), tmp_path / "x.h5", timeout_s=0.5)
        assert time.monotonic() - started < 5
    assert _left(tmp_path) == []


def test_a_trickling_server_hits_the_deadline(serve, tmp_path: Path) -> None:
    data = b"abcdefghij" * 100
    server = serve({"/slow.h5": Route(data, trickle_s=0.01)})
    pin = Pin(server.base + "/slow.h5", len(data), hashlib.sha256(data).hexdigest())
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"not complete after 0\.3 s"):
        install(pin, tmp_path / "slow.h5", timeout_s=2, deadline_s=0.3)
    assert time.monotonic() - started < 3 and _left(tmp_path) == []


def test_connection_refused_is_one_line(tmp_path: Path, made) -> None:
    entry, _ = made
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    code, _, err = _get(f"http://{LOOPBACK}:{port}", tmp_path)
    assert code == 1 and "cannot connect" in err and "Traceback" not in err and _left(tmp_path) == []


def test_an_existing_different_file_is_never_replaced(serve, made, tmp_path: Path) -> None:
    entry, data = made
    server = serve({url_path(entry): Route(data)})
    mine = tmp_path / entry.file_name
    mine.write_bytes(b"my own weights")
    code, out, err = _get(server.base, tmp_path)
    assert code == 1 and out == "" and "exists with other contents" in err and "--dir" in err
    assert mine.read_bytes() == b"my own weights" and _left(tmp_path) == [entry.file_name]
    assert server.asked == []  # refused before downloading


def test_usage_errors(tmp_path: Path) -> None:
    code, out, err = _run("models", "get", "mesonet5", "--dir", str(tmp_path))
    assert code == 2 and out == "" and all(name in err for name in CATALOG)
    code, _, err = _run("models", "get")
    assert code == 2 and "name a model" in err
    code, _, err = _run("models", "get", NAME, "--base-url", "file:///etc", "--dir", str(tmp_path))
    assert code == 2 and "http://" in err
    assert _left(tmp_path) == []


def test_list_names_every_published_model() -> None:
    code, out, _ = _run("models", "get", "--list")
    assert code == 0
    for entry in CATALOG.values():
        assert entry.name in out and entry.path in out and entry.size_text in out


def test_the_web_page_offers_the_same_command() -> None:
    entry = CATALOG[catalog.DEFAULT_NAME]
    assert cards.GET_MODEL_COMMAND == f"dff models get {entry.name}"
    assert entry.licence in cards.GET_MODEL_WHAT and entry.size_text in cards.GET_MODEL_WHAT
    assert cards.GET_MODEL_COMMAND in cards.no_model_banner() and cards.GET_MODEL_COMMAND in cards.get_model_hint()


def test_write_json_replaces_atomically(tmp_path: Path) -> None:
    path = models_get.write_json(tmp_path / "c.json", {"a": 1})
    models_get.write_json(path, {"a": 2})
    assert path.read_text() == '{\n  "a": 2\n}\n' and _left(tmp_path) == ["c.json"]


# ---- the authors' files, from ../shared ------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_routes() -> dict[str, Route]:
    folder = SHARED / "detectors" / "mesonet"
    if not (folder / "weights").is_dir():
        pytest.skip(f"{folder}/weights not present (../shared is only on developer machines)")
    return {url_path(e): Route((folder / e.path).read_bytes()) for e in CATALOG.values()}


def test_get_every_published_file_from_a_mirror_of_shared(serve, shared_routes, tmp_path: Path) -> None:
    server = serve(shared_routes)
    for entry in CATALOG.values():
        code, out, err = _run("models", "get", entry.name, "--dir", str(tmp_path), "--base-url", server.base)
        assert code == 0, err
        installed = tmp_path / entry.file_name
        assert models_get.file_sha256(installed) == entry.sha256
        facts = read_card_facts(installed, entry.sha256)
        assert facts is not None and facts.name == entry.name
    assert len(_left(tmp_path)) == 2 * len(CATALOG)


def test_the_installed_mesonet_loads_with_its_card(serve, shared_routes, tmp_path: Path) -> None:
    mesonet = pytest.importorskip("pipeline.detectors.mesonet")
    if not hasattr(mesonet, "read_mesonet_h5"):
        pytest.skip("pipeline/detectors/mesonet.py has no read_mesonet_h5 yet")
    import torch

    from pipeline.models import load_model

    server = serve(shared_routes)
    assert _get(server.base, tmp_path)[0] == 0
    loaded = load_model(tmp_path / "Meso4_DF.h5", torch.device("cpu"))
    assert loaded.info.detector == "mesonet4" and loaded.info.card_name == NAME
    assert loaded.info.sha256 == CATALOG[NAME].sha256 and loaded.info.calibrated_threshold is None
