"""The hostile-input suite's session: the cases (made once), one engine, the tally and its summary line.

Every mode of ``test_inputs.py`` records each case's outcome in the ``Tally``; at the end of the run
``pytest_terminal_summary`` prints exactly one line from it:

    hostile inputs: N kinds, N clear errors, N analysed, 0 crashes, 0 leaks
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.models import build_model, save_checkpoint
from tests.hostile.cases import Case
from tests.hostile.generate import generate
from tests.hostile.security_kit import TOKEN
from tests.media import encode_video, face_scene
from tests.servers import Served, make_settings, serving

MODES = ("analyze", "scan", "server")


@dataclass
class Tally:
    """Outcomes by case and mode (True = the expected outcome exactly), plus every leak found."""

    cases: dict[str, Case] = field(default_factory=dict)
    outcomes: dict[str, dict[str, bool]] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)

    def record(self, case: Case, mode: str, ok: bool) -> None:
        assert mode in MODES, mode
        self.cases[case.kind] = case
        self.outcomes.setdefault(case.kind, {})[mode] = ok

    def leak(self, what: str) -> None:
        self.leaks.append(what)

    def line(self) -> str:
        tried = {k: modes for k, modes in self.outcomes.items() if modes}
        good = {k for k, modes in tried.items() if all(modes.values())}
        errors = sum(1 for k in good if self.cases[k].expect.is_error)
        crashes = len(tried) - len(good)
        return (
            f"hostile inputs: {len(tried)} kinds, {errors} clear errors, {len(good) - errors} analysed, "
            f"{crashes} crashes, {len(self.leaks)} leaks"
        )


_TALLY = pytest.StashKey[Tally]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TALLY] = Tally()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, None)
    if tally is None or not tally.outcomes:
        return  # none of the hostile cases ran (deselected): no figures to give
    terminalreporter.write_line(tally.line())  # exactly one line; pytest lists the failing cases itself


@pytest.fixture(scope="session")
def tally(request: pytest.FixtureRequest) -> Tally:
    return request.config.stash[_TALLY]


@dataclass(frozen=True)
class Generated:
    folder: Path
    cases: dict[str, Case]
    unavailable: dict[str, str]

    def get(self, kind: str) -> Case:
        """The case, or skip with the reason this installation cannot make it."""
        if kind in self.unavailable:
            pytest.skip(self.unavailable[kind])
        return self.cases[kind]


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    folder = tmp_path_factory.mktemp("hostile") / "cases"
    cases, unavailable = generate(folder)
    return Generated(folder, cases, unavailable)


@pytest.fixture(scope="session")
def hostile_settings(tmp_path_factory: pytest.TempPathFactory):
    """Defaults (caps included) except: CPU, one frame per second. ``dff scan`` and the server get the same."""
    from pipeline.config import Settings

    return Settings(data_dir=tmp_path_factory.mktemp("hostile_data"), device="cpu", every_s=1.0)


@pytest.fixture(scope="session")
def hostile_engine(hostile_settings) -> Iterator[object]:
    """Random weights (``allow_untrained``): labels are arbitrary, but which outcome comes is not."""
    from pipeline.engine import Engine

    with Engine.open(hostile_settings, allow_untrained=True) as engine:
        yield engine


# the security tests' servers and media (tests/hostile/test_security*.py), one of each per test module
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("security_models")
    save_checkpoint(build_model(), directory / "random.pth")
    return directory


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, models_dir) -> Iterator[Served]:
    """Composed as ``dff serve`` composes it (the web page mounted), with a token."""
    root = tmp_path_factory.mktemp("token_server")
    with serving(make_settings(root / "data", models_dir, token=TOKEN), web_ui=True) as served:
        yield served


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[Served]:
    """No token, on loopback (model management allowed from loopback), small caps: 1 MiB uploads,
    100,000-pixel frames, 1.5-s videos, 300 frames per request."""
    root = tmp_path_factory.mktemp("open_server")
    save_checkpoint(build_model(), root / "models" / "random.pth")
    settings = make_settings(
        root / "data", root / "models", max_upload_mb=1.0, max_image_pixels=100_000, max_duration_s=1.5
    )
    with serving(settings) as served:
        yield served


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory) -> Path:
    """A 1-s 160×120 clip with one face: under every cap of ``open_server``."""
    d = tmp_path_factory.mktemp("security_media")
    return encode_video(d / "face.mp4", [face_scene(160, 120, [(20 + t, 10, 90)]) for t in range(10)], fps=10)


@pytest.fixture
def request_fixture(request):
    """pytest's own ``request`` fixture under a name that does not shadow the HTTP helper ``request``."""
    return request
