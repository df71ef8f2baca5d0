"""What pipeline.models does with model cards and training starts: the card beside a checkpoint is applied
only when it describes those weights, its temperature is folded into the logit, backbones load headless."""

from __future__ import annotations

import json

import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from pipeline.cards import read_card
from pipeline.models import (
    CARD_SCHEMA,
    FACENET_PROFILE,
    SEED_PROFILE,
    build_model,
    card_path,
    file_sha256,
    load_for_training,
    load_model,
    save_checkpoint,
)
from pipeline.train.card import card_for, new_card, write_card

CPU = torch.device("cpu")


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(build_model(), tmp_path / "m.pth", SEED_PROFILE, epoch=3)


def _card(path, **calibration):
    card = new_card(path, "demo", SEED_PROFILE, {"init": "test"}, 1)
    card["calibration"] = calibration or None
    return write_card(path, card)


def test_card_is_written_beside_with_the_weights_hash(checkpoint):
    written = _card(checkpoint)
    assert written == card_path(checkpoint) == checkpoint.with_name("m.pth.card.json")
    card = read_card(checkpoint)
    assert card["schema"] == CARD_SCHEMA and card["sha256"] == file_sha256(checkpoint)
    assert card["summary"] == "not evaluated yet"
    info = load_model(checkpoint, CPU).info
    assert (info.card_name, info.temperature, info.calibrated_threshold) == ("demo", 1.0, None)


def test_card_temperature_is_folded_into_the_logit(checkpoint):
    _card(checkpoint, temperature=2.5, threshold=0.8, target_fpr=0.01)
    x = torch.rand(2, 3, 96, 96)
    raw = load_model(checkpoint, CPU, apply_card=False)
    calibrated = load_model(checkpoint, CPU)
    with torch.no_grad():
        torch.testing.assert_close(calibrated.module(x), raw.module(x) / 2.5, rtol=1e-5, atol=1e-6)
    assert (calibrated.info.temperature, calibrated.info.calibrated_threshold) == (2.5, 0.8)
    assert raw.info.card_name is None and raw.info.temperature == 1.0
    assert "calibrated T=2.5" in calibrated.info.card_summary


def test_stale_or_broken_cards_are_ignored(checkpoint, caplog):
    _card(checkpoint, temperature=2.5, threshold=0.8, target_fpr=0.01)
    save_checkpoint(build_model(), checkpoint, SEED_PROFILE)  # new weights, old card
    info = load_model(checkpoint, CPU).info
    assert info.card_name is None and info.temperature == 1.0
    assert "other weights" in caplog.text
    refreshed = card_for(checkpoint, SEED_PROFILE, file_sha256(checkpoint))
    assert refreshed["calibration"] is None and refreshed["metrics"] == []
    card_path(checkpoint).write_text("{not json")
    assert load_model(checkpoint, CPU).info.card_name is None
    data = {"schema": CARD_SCHEMA, "sha256": file_sha256(checkpoint), "calibration": {"temperature": -1}}
    card_path(checkpoint).write_text(json.dumps(data))
    assert load_model(checkpoint, CPU).info.temperature == 1.0


def test_facenet_backbone_loads_with_a_fresh_head(tmp_path):
    torch.manual_seed(1)
    backbone = InceptionResnetV1(pretrained=None, classify=True, num_classes=7)  # an identity classifier
    path = tmp_path / "vggface2-like.pt"
    torch.save(backbone.state_dict(), path)
    model, profile = load_for_training(path)
    assert profile == FACENET_PROFILE and model.training
    assert model.logits.weight.shape == (1, 512)
    torch.testing.assert_close(model.block8.conv2d.weight, backbone.block8.conv2d.weight)


def test_training_start_from_our_checkpoint_keeps_its_profile(checkpoint):
    model, profile = load_for_training(checkpoint)
    assert profile == SEED_PROFILE
    torch.testing.assert_close(model.logits.weight, load_model(checkpoint, CPU).module.logits.weight)
