"""``dff eval A B``: an ensemble measured row by row (each detector, the mean, in-sample stacking), the
stacking stored in the ensemble card and then used by the service; and the stacking fit itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.ensemble import ENSEMBLE_CARD_SCHEMA, ensemble_card_path, ensemble_info, fit_stacking
from pipeline.errors import CheckpointError
from pipeline.models import load_model
from tests.mesonet_h5 import two_detectors
from tests.pipeline.train.conftest import write_real_photos
from tests.pipeline.train.test_commands import _run, _write_fakes


def test_fit_stacking_recovers_weights_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (4000, 2))
    truth = 1 / (1 + np.exp(-(0.3 + 1.5 * z[:, 0] - 0.5 * z[:, 1])))
    labels = (rng.random(4000) < truth).astype(np.int64)
    probs = 1 / (1 + np.exp(-z))
    stacking = fit_stacking(probs, labels, l2=0.0)
    assert stacking.weights == pytest.approx((1.5, -0.5), abs=0.15)
    assert stacking.bias == pytest.approx(0.3, abs=0.15)
    assert stacking.fuse(probs).shape == (4000,)
    # separable data still has a finite answer (the L2 penalty)
    separable = fit_stacking(np.array([[0.1, 0.2], [0.9, 0.8]]), np.array([0, 1]))
    assert all(np.isfinite(separable.weights)) and np.isfinite(separable.bias)


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, Path]:
    return two_detectors(tmp_path_factory.mktemp("members"), seed=7)


def test_dff_eval_of_two_checkpoints_prints_a_row_per_detector_and_stores_stacking(members, tmp_path, monkeypatch):
    models_dir = tmp_path / "models"
    monkeypatch.setenv("DFF_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("DFF_MIN_FACE_PX", "60")
    real = write_real_photos(tmp_path / "real")
    fake = _write_fakes(tmp_path / "fake")
    report = tmp_path / "eval"
    argv = ["eval", *map(str, members), "--real", str(real), "--fake", str(fake), "--report", str(report)]
    code, out, err = _run(*argv, "--calibrate", "--target-fpr", "0.25", "--device", "cpu", "-q")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("ensemble(seed.pth + Meso4_random.h5) on ")
    names = [line.split()[0] for line in lines[2:6]]
    assert names == ["seed.pth", "Meso4_random.h5", "ensemble:", "ensemble:"]
    assert "stacking (in-sample)" in lines[5]
    doc = json.loads((report / "metrics.json").read_text())
    assert [r["name"] for r in doc["rows"]] == [
        "seed.pth",
        "Meso4_random.h5",
        "ensemble: mean",
        "ensemble: stacking (in-sample)",
    ]
    assert all(r["n_real"] == 3 and r["n_fake"] == 2 for r in doc["rows"])  # frames with faces
    infos = [load_model(m, torch.device("cpu")).info for m in members]
    card_file = ensemble_card_path(models_dir, ensemble_info(infos, "cpu"))
    assert doc["card"] == str(card_file)
    card = json.loads(card_file.read_text())
    assert card["schema"] == ENSEMBLE_CARD_SCHEMA and [m["name"] for m in card["members"]] == [
        "seed.pth",
        "Meso4_random.h5",
    ]
    assert len(card["fusion"]["weights"]) == 2 and 0 < card["threshold"] < 1

    # the service now fuses this ensemble by the stacking, with the fitted threshold
    settings = Settings.from_env(ensemble=members, device="cpu")
    with Engine.open(settings) as engine:
        assert engine.ensemble is not None and engine.ensemble.stacking is not None
        assert engine.ensemble.fusion.startswith("logistic stacking")
        assert engine.info.calibrated_threshold == pytest.approx(card["threshold"])
    # the same members in another order are another ensemble: no card, the mean
    with Engine.open(Settings.from_env(ensemble=members[::-1], device="cpu")) as other:
        assert other.ensemble is not None and other.ensemble.stacking is None


def test_a_card_for_other_members_is_an_error_not_ignored(members, tmp_path):
    infos = [load_model(m, torch.device("cpu")).info for m in members]
    path = ensemble_card_path(tmp_path, ensemble_info(infos, "cpu"))
    path.write_text(json.dumps({"schema": ENSEMBLE_CARD_SCHEMA, "sha256": "0" * 64, "fusion": {}}))
    with pytest.raises(CheckpointError, match="not a dff.ensemble-card/1 card for ensemble"):
        Engine.open(Settings(ensemble=members, device="cpu", models_dir=tmp_path))


def test_dff_eval_of_one_checkpoint_still_parses_to_one_path(members):
    from ui.cli import build_parser  # the single-checkpoint evaluation itself is test_commands'

    args = build_parser().parse_args(["eval", str(members[0]), "--real", "r", "--fake", "f", "--report", "x"])
    assert args.checkpoint == [members[0]]
