"""The pinned catalogue of published weights: its pins (against ../shared's README and files when present),
its URLs, its model cards (which the service accepts) and the no-model message that names it."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from pipeline.detectors import catalog
from pipeline.detectors.catalog import CATALOG, DEFAULT_NAME, Published, download_url, model_card, published
from pipeline.detectors.registry import DETECTORS
from pipeline.errors import ConfigError, NoModel
from pipeline.models import CARD_SCHEMA, card_path, find_checkpoint, read_card_facts
from tests.media import SHARED

MESONET_DIR = SHARED / "detectors" / "mesonet"
ROW = re.compile(r"^\|\s*(weights/\S+\.h5)\s*\|\s*(\d+)\s*\|\s*([0-9a-f]{64})\s*\|$")


def _shared_readme() -> str:
    path = MESONET_DIR / "README.md"
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is only on developer machines)")
    return path.read_text(encoding="utf-8")


def test_pins_equal_the_shared_readme_table() -> None:
    text = _shared_readme()
    table = {m[1]: (int(m[2]), m[3]) for line in text.splitlines() if (m := ROW.match(line.strip()))}
    assert len(table) == 4
    assert {e.path: (e.size_bytes, e.sha256) for e in CATALOG.values()} == table
    for entry in CATALOG.values():
        assert entry.repository in text and entry.commit in text and entry.licence in text


@pytest.mark.parametrize("name", list(CATALOG))
def test_shared_files_have_the_pinned_bytes(name: str) -> None:
    entry = CATALOG[name]
    path = MESONET_DIR / entry.path
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared is only on developer machines)")
    data = path.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size_bytes, entry.sha256)


def test_entries_are_well_formed() -> None:
    assert set(CATALOG) == {"mesonet4-df", "mesonet4-f2f", "mesoinception4-df", "mesoinception4-f2f"}
    assert DEFAULT_NAME in CATALOG
    assert len({e.file_name for e in CATALOG.values()}) == len(CATALOG)  # one models directory holds all four
    for name, entry in CATALOG.items():
        assert entry.name == name and entry.detector in DETECTORS
        assert re.fullmatch(r"[0-9a-f]{40}", entry.commit) and re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.size_bytes > 0 and entry.file_name.endswith(".h5") and entry.licence == "Apache-2.0"
    assert CATALOG["mesonet4-df"].size_text == "156 KB"
    assert {CATALOG[n].detector for n in ("mesoinception4-df", "mesoinception4-f2f")} == {"mesoinception4"}


def test_unknown_name_lists_the_names() -> None:
    with pytest.raises(ConfigError) as err:
        published("mesonet5")
    assert "mesonet5" in str(err.value) and all(name in str(err.value) for name in CATALOG)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (catalog.DEFAULT_BASE_URL, "https://raw.githubusercontent.com/DariusAf/MesoNet/{c}/weights/Meso4_DF.h5"),
        ("http://127.0.0.1:8000/mirror/", "http://127.0.0.1:8000/mirror/DariusAf/MesoNet/{c}/weights/Meso4_DF.h5"),
        ("https://m.example/{path}?rev={commit}", "https://m.example/weights/Meso4_DF.h5?rev={c}"),
    ],
)
def test_download_url(base: str, expected: str) -> None:
    entry = CATALOG["mesonet4-df"]
    assert download_url(entry, base) == expected.format(c=entry.commit)


@pytest.mark.parametrize("base", ["file:///etc", "ftp://host/x", "127.0.0.1:8000", "http://", "https://x/{branch}"])
def test_download_url_refuses_other_schemes_and_fields(base: str) -> None:
    with pytest.raises(ConfigError):
        download_url(CATALOG["mesonet4-df"], base)


def test_model_card_is_accepted_by_the_service(tmp_path: Path) -> None:
    weights = tmp_path / "Meso4_DF.h5"
    weights.write_bytes(b"published bytes")
    sha = hashlib.sha256(b"published bytes").hexdigest()
    entry: Published = CATALOG["mesonet4-df"]
    card = model_card(
        entry, sha, architecture="Meso-4", preprocess={"name": "meso-256"}, url="http://x/y", installed_at="now"
    )
    assert card["schema"] == CARD_SCHEMA and card["calibration"] is None and card["metrics"] == []
    assert card["source"]["commit"] == entry.commit and card["source"]["licence"] == "Apache-2.0"
    card_path(weights).write_text(json.dumps(card), encoding="utf-8")
    facts = read_card_facts(weights, sha)
    assert facts is not None
    assert (facts.name, facts.temperature, facts.threshold) == ("mesonet4-df", 1.0, None)
    assert facts.summary is not None
    for needle in ("DariusAf/MesoNet@2144d56", "weights/Meso4_DF.h5", "Apache-2.0", "Afchar", "uncalibrated"):
        assert needle in facts.summary
    assert read_card_facts(weights, "0" * 64) is None  # pinned to these bytes


def test_no_model_message_names_the_command(tmp_path: Path) -> None:
    models = tmp_path / "my models"
    with pytest.raises(NoModel) as err:
        find_checkpoint(None, models)
    message = str(err.value)
    assert f"`dff models get mesonet4-df --dir '{models}'`" in message
    assert "Apache-2.0" in message and "156 KB" in message
    assert catalog.get_command().startswith("`dff models get mesonet4-df` (")
