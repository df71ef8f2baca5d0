"""``dff train`` → ``dff eval --calibrate`` → ``dff models`` end to end on photos the test makes, at a
small scale that runs on CPU; then the service's loader applies the card."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cards import list_models
from pipeline.config import Settings
from pipeline.engine import Engine
from pipeline.models import card_path, file_sha256, load_model, read_training_state
from pipeline.report import report_from_dict, report_to_dict
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.train.selfblend import self_blend
from pipeline.types import Report
from tests.media import astronaut
from tests.pipeline.train.conftest import ASTRO_LANDMARKS, write_real_photos
from ui.cli import main

# small and head-only: CPU time, and a checkpoint without the optimiser state of every layer
SMALL = ["--input-px", "96", "--batch-size", "4", "--trainable", "head", "--threads", "2", "--device", "cpu", "-q"]


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def _write_fakes(folder):
    """Self-blended versions of the astronaut (whole photo blended around MTCNN's landmarks)."""
    folder.mkdir(parents=True)
    for seed in range(2):
        blended = self_blend(astronaut(), ASTRO_LANDMARKS, np.random.default_rng(seed)).image
        Image.fromarray(blended).save(folder / f"astro_sbi_{seed}.png")
    return folder


@pytest.fixture(scope="module", autouse=True)
def _large_faces_only():
    """The test photos' faces are 90-180 px: a 60-px floor gives MTCNN a far smaller pyramid (CPU time).
    Module-scoped fixtures (training) see it; each test's own isolated environment does not."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFF_MIN_FACE_PX", "60")
        mp.setenv("DFF_VIDEO_MIN_FACE_PX", "60")
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    real = write_real_photos(root / "real")
    out = root / "models" / "sbi.pth"
    cache = root / "cache"
    code, stdout, err = _run(
        "train",
        "--real",
        str(real),
        "--self-blend",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--val-fraction",
        "0.34",
        "--cache",
        str(cache),
        *SMALL,
    )
    assert code == 0, err
    return root, real, out, cache, stdout, err


def test_train_writes_a_loadable_checkpoint_and_card(trained):
    root, _real, out, _cache, stdout, err = trained
    assert "sbi.pth: completed at epoch 1;" in stdout and "dff eval" in stdout
    assert "epoch 1/1: loss" in err
    loaded = load_model(out, torch.device("cpu"))
    assert loaded.info.profile.input_px == 96 and loaded.info.card_name == "sbi"
    card = json.loads(card_path(out).read_text())
    assert card["sha256"] == file_sha256(out)
    data = card["training"]["data"]
    assert data["self_blend"] and data["faces"]["train"]["real"] >= 1 and data["faces"]["validation"]["real"] >= 1
    assert set(data["validation_files"]) < {"astronaut.png", "astronaut_mirror.png", "two_faces.jpg"}
    assert card["architecture"]["name"] == "InceptionResnetV1" and card["preprocess"]["input_px"] == 96
    history = card["training"]["history"]
    assert len(history) == 1 and history[0]["steps"] == 2 and history[0]["val_auc"] is not None


def test_existing_output_needs_resume_or_overwrite(trained):
    root, real, out, cache, *_ = trained
    code, _, err = _run("train", "--real", str(real), "--self-blend", "--out", str(out), *SMALL)
    assert code == 2 and "--resume" in err
    code, _, err = _run("train", "--real", str(real), "--out", str(root / "x.pth"), *SMALL)
    assert code == 2 and "--self-blend" in err


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    root, real, out, cache, *_ = trained
    copy = tmp_path / "resumed.pth"
    copy.write_bytes(out.read_bytes())
    code, stdout, err = _run(
        "train",
        "--real",
        str(real),
        "--self-blend",
        "--out",
        str(copy),
        "--resume",
        "--epochs",
        "2",
        "--max-steps",
        "3",
        "--val-fraction",
        "0.34",
        "--cache",
        str(cache),
        *SMALL,
    )
    assert code == 0, err
    assert "epoch 2/2" in err and "epoch 1/2" not in err
    state = read_training_state(copy)["train_state"]
    assert state["step"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2]


def test_eval_calibrate_then_models_and_the_service_uses_the_card(trained, tmp_path):
    root, real, out, *_ = trained
    fake = _write_fakes(tmp_path / "fake")
    report_dir = tmp_path / "eval"
    code, stdout, err = _run(
        "eval",
        str(out),
        "--real",
        str(real),
        "--fake",
        str(fake),
        "--report",
        str(report_dir),
        "--calibrate",
        "--target-fpr",
        "0.25",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    assert "frames" in stdout and "videos: per_person" in stdout and "calibration: T=" in stdout
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["frame"]["n_real"] == 3 and metrics["frame"]["n_fake"] == 2  # frames with faces
    assert [v["strategy"] for v in metrics["video"]] == ["mean", "max_frame", "confident", "per_person"]
    assert all(v["n"] == 5 and v["auc"] is not None for v in metrics["video"])
    assert metrics["threshold_source"].startswith("calibrated")
    for name in ("roc.png", "reliability.png"):
        with Image.open(report_dir / name) as im:
            assert im.format == "PNG" and im.size[0] >= 400
    assert metrics["worst"] and all((report_dir / w["overlay"]).is_file() for w in metrics["worst"])

    card = json.loads(card_path(out).read_text())
    cal = card["calibration"]
    assert cal["target_fpr"] == 0.25 and cal["fitted_on"]["files"] == {"real": 3, "fake": 2}
    assert card["metrics"][-1]["frame"]["auc"] == pytest.approx(metrics["frame"]["auc"])
    assert card["sha256"] == file_sha256(out)

    code, listing, _ = _run("models", "--dir", str(out.parent))
    assert code == 0 and "* sbi.pth" in listing and "calibrated T=" in listing and "frame AUC" in listing
    (entry,) = [e for e in list_models(out.parent) if e.path.name == out.name]  # what GET /v1/models lists
    assert entry.card_status == "ok" and entry.sha256 == file_sha256(out)
    assert entry.card_facts()["threshold"] == pytest.approx(cal["threshold"])

    settings = Settings(device="cpu", checkpoint=out, min_face_px=60)
    with Engine.open(settings) as engine:
        assert engine.info.card_name == "sbi"
        assert engine.info.temperature == pytest.approx(cal["temperature"])
        assert engine.info.calibrated_threshold == pytest.approx(cal["threshold"])
        with open_media_for(real / "astronaut.png", settings) as source:
            *_, report = analyze(source, engine, settings)
    assert isinstance(report, Report) and report.model.card_summary.startswith("frame AUC")
    # the service applies the card's operating point and says so
    assert report.threshold == pytest.approx(cal["threshold"]) and report.threshold_source == "model card"
    assert report_from_dict(report_to_dict(report)) == report
