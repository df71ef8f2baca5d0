"""The pinned catalogue of published weights that ``dff models get NAME`` installs.

Pure data and pure functions: nothing here reaches the network (pipeline/ never does; the download is
ui/models_get.py's). Each entry names one file of a public repository, pinned by commit *and* by its byte
size and SHA-256, so the bytes installed are exactly the bytes checked here, whichever host serves them.

Download URLs are ``{base}/{repo}/{commit}/{path}`` (``DEFAULT_BASE_URL``: GitHub's raw-content host, whose
layout that is), or ``base`` itself when it is a template naming ``{repo}``, ``{commit}`` and ``{path}``
(a mirror laid out differently).

Torch-free on purpose: ``dff models get --list`` and the no-model messages must not load torch. Detector
names are the registry's (pipeline/detectors/registry.py), checked by tests/pipeline/detectors/test_catalog.py.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"
URL_LAYOUT = "{repo}/{commit}/{path}"

MESONET_REPOSITORY = "DariusAf/MesoNet"
MESONET_COMMIT = "2144d56a30e48cdcac1976ff13a1c5cdc86376c6"
MESONET_AUTHORS = "Darius Afchar, Vincent Nozick, Junichi Yamagishi, Isao Echizen"
MESONET_PAPER = "MesoNet: a Compact Facial Video Forgery Detection Network (WIFS 2018)"
APACHE_2 = "Apache-2.0"

UNCALIBRATED = (
    "Published weights, installed as their authors released them: not calibrated and not evaluated by this "
    "project (run `dff eval --calibrate` on data like yours). Trained on one manipulation method each "
    "(Deepfake face swaps or Face2Face reenactment); expect weaker scores on other generators, heavy "
    "compression and small faces. Treat scores as evidence to review, not a verdict."
)


@dataclass(frozen=True)
class Published:
    """One published weights file: where it lives, what its bytes are, and what it is.

    ``name``: what ``dff models get`` takes; ``path``: inside ``repository`` at ``commit``; ``detector``: a
    registry name; ``description``: one line, what it detects.
    """

    name: str
    repository: str
    commit: str
    path: str
    size_bytes: int
    sha256: str
    detector: str
    licence: str
    authors: str
    paper: str
    description: str

    @property
    def file_name(self) -> str:
        """The installed file's name in the models directory (the file's own name in the repository)."""
        return PurePosixPath(self.path).name

    @property
    def size_text(self) -> str:
        """``156 KB`` (decimal units, as download pages count)."""
        return f"{self.size_bytes / 1000:.0f} KB"

    @property
    def source_text(self) -> str:
        """``DariusAf/MesoNet@2144d56 weights/Meso4_DF.h5``"""
        return f"{self.repository}@{self.commit[:7]} {self.path}"


def _meso(name: str, path: str, size_bytes: int, sha256: str, detector: str, description: str) -> Published:
    return Published(
        name=name,
        repository=MESONET_REPOSITORY,
        commit=MESONET_COMMIT,
        path=path,
        size_bytes=size_bytes,
        sha256=sha256,
        detector=detector,
        licence=APACHE_2,
        authors=MESONET_AUTHORS,
        paper=MESONET_PAPER,
        description=description,
    )


CATALOG: dict[str, Published] = {
    entry.name: entry
    for entry in (
        _meso(
            "mesonet4-df",
            "weights/Meso4_DF.h5",
            156128,
            "036ed30d04ffd9c7506f825b97c86aa64915f5818931da96817b169aad790af5",
            "mesonet4",
            "MesoNet Meso-4 trained on Deepfake face swaps (the authors' dataset)",
        ),
        _meso(
            "mesonet4-f2f",
            "weights/Meso4_F2F.h5",
            156128,
            "bcfda015d217b9f8d6557693edbdf9f4e79cfd22672541968dd0e2954462b5d7",
            "mesonet4",
            "MesoNet Meso-4 trained on Face2Face reenactment (FaceForensics)",
        ),
        _meso(
            "mesoinception4-df",
            "weights/MesoInception_DF.h5",
            197504,
            "234586d40058e76ef8b6f27ca4b63c06e31c2a5a69c0d8ba6f30b1468ab7bafa",
            "mesoinception4",
            "MesoNet MesoInception-4 trained on Deepfake face swaps (the authors' dataset)",
        ),
        _meso(
            "mesoinception4-f2f",
            "weights/MesoInception_F2F.h5",
            197504,
            "d4533ac8a3197dc35c47405d23d99e888c1d0135e267e03540c7451feaccff3f",
            "mesoinception4",
            "MesoNet MesoInception-4 trained on Face2Face reenactment (FaceForensics)",
        ),
    )
}
DEFAULT_NAME = "mesonet4-df"  # the one the no-model messages suggest


def published(name: str) -> Published:
    """The entry called ``name``; ConfigError listing the names otherwise."""
    entry = CATALOG.get(name)
    if entry is None:
        raise ConfigError(f"no published model called {name!r}; available: {', '.join(CATALOG)}")
    return entry


def download_url(entry: Published, base_url: str = DEFAULT_BASE_URL) -> str:
    """Where to fetch ``entry`` from (module docstring). ConfigError for a base that is not http(s)."""
    fields = {"repo": entry.repository, "commit": entry.commit, "path": entry.path}
    if "{" in base_url:
        try:
            url = base_url.format(**fields)
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                f"base URL template {base_url!r} may name only {{repo}}, {{commit}}, {{path}}: {err}"
            ) from None
    else:
        url = f"{base_url.rstrip('/')}/{URL_LAYOUT.format(**fields)}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL must be http:// or https:// with a host, got {base_url!r}")
    return url


def get_command(entry: Published | None = None, models_dir: Path | None = None) -> str:
    """```dff models get mesonet4-df` (MesoNet Meso-4 …; Apache-2.0, 156 KB)``: what the no-model messages
    say (``--dir`` added when ``models_dir`` is given, so the command installs where the service looks)."""
    entry = entry or CATALOG[DEFAULT_NAME]
    where = f" --dir {shlex.quote(str(models_dir))}" if models_dir is not None else ""
    return f"`dff models get {entry.name}{where}` ({entry.description}; {entry.licence}, {entry.size_text})"


def listing() -> str:
    """``dff models get --list``: one line per entry (name, size, licence, description, source)."""
    width = max(len(name) for name in CATALOG)
    lines = ["published models (`dff models get NAME` downloads one, checks its SHA-256 and installs it):"]
    for entry in CATALOG.values():
        lines.append(f"  {entry.name:<{width}}  {entry.size_text:>6}  {entry.licence}  {entry.description}")
        lines.append(f"  {'':<{width}}  from {entry.source_text}, sha256 {entry.sha256[:16]}…")
    return "\n".join(lines)


def summary_line(entry: Published) -> str:
    """The card's one line (shown by the service and in reports): what it is, where it came from."""
    return (
        f"{entry.description}; published weights from {entry.source_text} ({entry.licence}, "
        f"{entry.authors}); uncalibrated, not evaluated here"
    )


def model_card(
    entry: Published,
    sha256: str,
    *,
    architecture: str,
    preprocess: Mapping[str, Any],
    url: str,
    installed_at: str,
) -> dict[str, Any]:
    """A ``dff.card/1`` card (pipeline/train/card.py's layout) for the installed file whose SHA-256 is
    ``sha256``: provenance under ``source``, no metrics and no calibration (temperature 1, default threshold).

    ``architecture``/``preprocess``: the registry spec's words and profile fields (the caller has torch).
    """
    return {
        "schema": "dff.card/1",  # pipeline.models.CARD_SCHEMA, spelled here to keep this module torch-free
        "name": entry.name,
        "checkpoint": entry.file_name,
        "sha256": sha256,
        "updated": installed_at,
        "detector": entry.detector,
        "architecture": {"name": architecture, "detector": entry.detector},
        "preprocess": dict(preprocess),
        "source": {
            "repository": entry.repository,
            "commit": entry.commit,
            "path": entry.path,
            "url": url,
            "size_bytes": entry.size_bytes,
            "sha256": entry.sha256,
            "licence": entry.licence,
            "authors": entry.authors,
            "paper": entry.paper,
            "installed_with": f"dff models get {entry.name}",
        },
        "training": {"init": f"the authors' published weights ({entry.source_text})", "data": None},
        "metrics": [],
        "calibration": None,
        "summary": summary_line(entry),
        "limitations": UNCALIBRATED,
    }
