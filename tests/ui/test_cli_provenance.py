"""``dff scan`` and ``dff client`` say what each file says about itself: one ``  provenance:`` line after
its verdict line, for a signed, a tampered and an unsigned face photo (credentials made in the test,
tests/c2pa_kit.py), the same state in the --json report and the summary in the CSV's provenance column."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.c2pa_kit import SIGNER, make_chain, sign, tamper_pixels
from tests.media import astronaut
from tests.servers import make_settings, start_server
from ui.cli import main
from ui.cmd_analyze import PROVENANCE_PREFIX, provenance_line

NO_MANIFEST = "no C2PA manifest: unknown provenance (that is not evidence of manipulation)"
STATES = {"unsigned.jpg": "absent", "signed.jpg": "untrusted", "tampered.jpg": "invalid"}


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chain) -> dict[str, Path]:
    """The astronaut's face as an unsigned JPEG, the same signed with the test chain, and the signed one
    with a bit of its pixels flipped (its manifest kept)."""
    d = tmp_path_factory.mktemp("provenance_media")
    unsigned = d / "unsigned.jpg"
    Image.fromarray(astronaut()).save(unsigned, quality=92)
    signed = sign(unsigned, d / "signed.jpg", chain)
    return {"unsigned.jpg": unsigned, "signed.jpg": signed, "tampered.jpg": tamper_pixels(signed, d / "tampered.jpg")}


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir: Path) -> Path:
    return next(checkpoint_dir.glob("*.pth"))


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _pairs(stdout: str) -> dict[str, str]:
    """File name -> the provenance line printed right after its verdict line (prefix removed)."""
    lines = stdout.strip().splitlines()
    pairs = {}
    for verdict, provenance in zip(lines[::2], lines[1::2], strict=True):
        assert not verdict.startswith(" ") and provenance.startswith(PROVENANCE_PREFIX), stdout
        pairs[verdict.split(":")[0]] = provenance.removeprefix(PROVENANCE_PREFIX)
    return pairs


@pytest.fixture(scope="module")
def scanned(photos, checkpoint, tmp_path_factory) -> tuple[int, str, str, Path]:
    """One ``dff scan`` of the three photos with --json and --csv: exit code, stdout, stderr, the folder."""
    reports = tmp_path_factory.mktemp("provenance_reports")
    files = [str(photos[name]) for name in STATES]
    flags = ("--checkpoint", str(checkpoint), "--precision", "fp32", "-q", "--json", str(reports))
    code, out, err = _run("scan", *files, *flags, "--csv", str(reports))
    return code, out, err, reports


def test_scan_prints_the_three_provenance_states_after_each_verdict(scanned):
    code, out, err, _ = scanned
    assert code == 0, err
    lines = _pairs(out)
    assert list(lines) == list(STATES), out
    assert lines["unsigned.jpg"] == NO_MANIFEST
    assert lines["signed.jpg"].startswith(f"C2PA signature valid, but the signer {SIGNER} (DFF Test Lab) is not on")
    assert "says c2pa.created by an algorithm (trainedAlgorithmicMedia); claim by dff-test 1.0" in lines["signed.jpg"]
    assert lines["tampered.jpg"].startswith("C2PA INVALID (assertion.dataHash.mismatch): signed by " + SIGNER)


def test_the_json_report_has_each_state_and_the_csv_its_summary(scanned):
    _, out, _, reports = scanned
    lines = _pairs(out)
    for name, state in STATES.items():
        report = json.loads((reports / f"{name}.json").read_text())
        provenance = report["provenance"]
        assert provenance["c2pa"]["state"] == state, name
        assert provenance["summary"] == lines[name], "the line printed is the report's summary, as is"
        rows = list(csv.DictReader((reports / f"{name}.csv").open()))
        assert rows and all(row["provenance"] == lines[name] for row in rows), name
    tampered = json.loads((reports / "tampered.jpg.json").read_text())["provenance"]["c2pa"]
    assert "assertion.dataHash.mismatch" in [s["code"] for s in tampered["status"]]
    assert tampered["manifest"]["signer"] == SIGNER
    assert json.loads((reports / "unsigned.jpg.json").read_text())["provenance"]["c2pa"]["manifest"] is None


def test_a_signer_under_the_configured_trust_anchor_is_valid(photos, checkpoint, chain, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(chain.root)
    monkeypatch.setenv("DFF_C2PA_TRUST_ANCHORS", str(anchors))
    code, out, err = _run("scan", str(photos["signed.jpg"]), "--checkpoint", str(checkpoint), "-q")
    assert code == 0, err
    assert _pairs(out)["signed.jpg"].startswith(f"C2PA valid: signed by {SIGNER} (DFF Test Lab)")


def test_dff_client_prints_the_provenance_line_after_the_verdict(photos, checkpoint_dir, tmp_path):
    served = start_server(make_settings(tmp_path / "data", checkpoint_dir))
    try:
        code, out, err = _run("client", str(photos["tampered.jpg"]), "--url", served.ws)
    finally:
        served.stop()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("job ") and lines[-2].startswith("tampered.jpg: "), out
    assert lines[-1].startswith(PROVENANCE_PREFIX + "C2PA INVALID (assertion.dataHash.mismatch)"), out


class _Summary:
    summary = "C2PA valid: signed by X"


def test_the_line_is_the_summary_as_is_and_there_is_none_without_a_file():
    assert provenance_line(_Summary()) == "  provenance: C2PA valid: signed by X"
    assert provenance_line(None) is None
