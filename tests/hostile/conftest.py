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

from tests.hostile.generate import Case, generate

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
