"""The detector registry end to end: every detector's checkpoint recognised from its bytes, scored with
Grad-CAM through the one classifier, P(fake) the right way round; unknown formats named; and the MesoNet
authors' own weights calling the authors' example faces the right way through ``dff scan``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.classify import FaceClassifier
from pipeline.detectors.registry import DETECTORS, SEED, FakeLogitTarget, Output, detector, fake_logit
from pipeline.errors import CheckpointError
from pipeline.models import file_sha256, load_model, save_checkpoint
from pipeline.types import FaceBox
from tests.media import SHARED
from tests.mesonet_h5 import write_mesonet_h5

MESONET = SHARED / "detectors" / "mesonet"
CPU = torch.device("cpu")


def boxes(n: int) -> list[FaceBox]:
    return [FaceBox(0, i, (0.0, 0.0, 10.0, 10.0), 0.99) for i in range(n)]


def crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_every_output_kind_gives_p_fake_as_a_sigmoid_of_one_logit() -> None:
    raw1 = torch.tensor([[2.0], [-1.0]])
    assert torch.allclose(torch.sigmoid(fake_logit(Output.SIGMOID_FAKE, raw1)), torch.sigmoid(raw1[:, 0]))
    assert torch.allclose(torch.sigmoid(fake_logit(Output.SIGMOID_REAL, raw1)), 1 - torch.sigmoid(raw1[:, 0]))
    raw2 = torch.tensor([[0.3, 1.7], [2.0, -0.5]])
    softmax_fake = torch.softmax(raw2, dim=1)[:, 1]
    assert torch.allclose(torch.sigmoid(fake_logit(Output.SOFTMAX_FAKE, raw2)), softmax_fake, atol=1e-7)
    assert float(FakeLogitTarget(Output.SIGMOID_REAL)(torch.tensor([3.0]))) == -3.0


def test_the_registry_knows_its_detectors_and_names_them_in_errors() -> None:
    assert set(DETECTORS) == {SEED, "mesonet4", "mesoinception4", "sbi-effb4"}
    assert detector("mesonet4").profile.input_px == 256 and detector("sbi-effb4").profile.input_px == 380
    with pytest.raises(CheckpointError, match="unknown detector 'nope'.*mesonet4"):
        detector("nope")


def write_random_h5(path: Path, arch: str, seed: int) -> Path:
    write_mesonet_h5(path, arch, seed=seed)
    return path


@pytest.mark.parametrize("kind", ["meso4", "inception"])
def test_a_mesonet_h5_is_recognised_from_its_bytes_and_scored_p_fake_the_right_way_round(tmp_path, kind) -> None:
    path = write_random_h5(tmp_path / "weights.bin", kind, seed=3)  # no .h5 suffix: the bytes decide
    loaded = load_model(path, CPU)
    assert loaded.info.detector == {"meso4": "mesonet4", "inception": "mesoinception4"}[kind]
    assert loaded.info.profile.name == "meso-256" and loaded.info.sha256 == file_sha256(path)
    faces = crops(3, 256)
    x = torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in faces])
    with torch.no_grad():
        p_real = torch.sigmoid(loaded.module(x)[:, 0]).numpy()
    with FaceClassifier(loaded) as classifier:
        scores = classifier.score(faces, boxes(3))
    assert [s.fake_prob for s in scores] == pytest.approx(list(1 - p_real), abs=1e-5)
    for s in scores:
        assert s.heatmap.shape == (256, 256) and np.isfinite(s.heatmap).all()
        assert s.embedding.shape == (16,)
    assert classifier.hook_count == 0  # closed: every hook released


def test_our_checkpoint_names_its_detector_and_round_trips(tmp_path) -> None:
    original = load_model(write_random_h5(tmp_path / "m.h5", "meso4", seed=5), CPU)
    path = save_checkpoint(original.module, tmp_path / "meso.pth", original.info.profile, detector_name="mesonet4")
    again = load_model(path, CPU)
    assert again.info.detector == "mesonet4" and again.info.profile == original.info.profile
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.allclose(original.module(x), again.module(x))
    assert torch.load(path, weights_only=True)["detector"] == "mesonet4"


def test_a_seed_checkpoint_without_a_detector_entry_is_the_seed(tmp_path) -> None:
    from facenet_pytorch import InceptionResnetV1

    module = InceptionResnetV1(classify=True, num_classes=1)
    torch.save({"model_state_dict": module.state_dict()}, tmp_path / "seed.pth")
    assert load_model(tmp_path / "seed.pth", CPU).info.detector == SEED


def test_an_sbi_release_is_recognised_and_scored_as_softmax_fake(tmp_path) -> None:
    from pipeline.detectors.sbi import SbiEfficientNetB4

    torch.manual_seed(0)
    module = SbiEfficientNetB4()
    torch.save({"model": module.state_dict(), "optimizer": {}, "epoch": 3}, tmp_path / "sbi.tar")
    loaded = load_model(tmp_path / "sbi.tar", CPU)
    assert loaded.info.detector == "sbi-effb4" and loaded.info.profile.input_px == 380
    faces = crops(1, 380, seed=1)
    x = torch.from_numpy(faces[0]).permute(2, 0, 1).float().unsqueeze(0) / 255
    with torch.no_grad():
        expected = torch.softmax(loaded.module(x), dim=1)[0, 1].item()
    with FaceClassifier(loaded) as classifier:
        (score,) = classifier.score(faces, boxes(1))
    assert score.fake_prob == pytest.approx(expected, abs=1e-5)
    assert score.heatmap.shape == (380, 380) and score.embedding.shape == (1792,)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"weights": torch.zeros(2)}, r"does not fit InceptionResnetV1.*unexpected keys: weights.*Formats known: seed"),
        ({"weights": 3, "epoch": 1}, r"found top-level keys \['epoch', 'weights'\].*Formats known: seed-irv1"),
        ({"model_state_dict": {"w": torch.zeros(2)}, "detector": "mesonet4"}, "does not fit Meso-4"),
        ({"model_state_dict": {"w": torch.zeros(2)}, "detector": "yolo"}, "unknown detector 'yolo'"),
        ({"model_state_dict": {"w": torch.zeros(2)}, "detector": 7}, "'detector' must be a detector's name"),
    ],
)
def test_unknown_formats_say_what_was_found(tmp_path, content, match) -> None:
    torch.save(content, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=match):
        load_model(tmp_path / "x.pth", CPU)


def test_a_text_file_named_h5_is_not_mistaken_for_weights(tmp_path) -> None:
    (tmp_path / "fake.h5").write_text("not weights")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model(tmp_path / "fake.h5", CPU)


# -- the authors' weights and example faces (../shared, developer machines) ---------------------------


def example_faces() -> list[Path]:
    if not MESONET.is_dir():
        pytest.skip(f"{MESONET} not present (../shared/detectors is only on developer machines)")
    return sorted((MESONET / "test_images").glob("*/*.jpg"))


def test_dff_scan_with_meso4_df_calls_the_authors_df_faces_fake_and_real_faces_real(tmp_path) -> None:
    from ui.cli import main

    images = example_faces()
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["scan", "--checkpoint", str(MESONET / "weights" / "Meso4_DF.h5"), "--json", str(tmp_path), *map(str, images)],
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    labels = {}
    for path in sorted(tmp_path.glob("*.json")):
        report = json.loads(path.read_text())
        assert report["model"]["detector"] == "mesonet4" and report["model"]["name"] == "Meso4_DF.h5"
        assert report["summary"]["n_faces"] == 1, (path.name, report["summary"])
        labels[report["media"]["name"]] = report["label"]
    assert labels == {
        "df00204.jpg": "fake",
        "df01254.jpg": "fake",
        "real00240.jpg": "real",
        "real00772.jpg": "real",
    }, out.getvalue()
