"""The training loop's parts on CPU at small scale: the loss falls, checkpoints round-trip through the
service's loader, the schedule and freezing behave, batches are labelled right."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import SEED_PROFILE, build_model, load_model, read_training_state, save_checkpoint
from pipeline.train.data import FAKE, REAL
from pipeline.train.examples import batches_of, make_batch, validation_set
from pipeline.train.trainer import TrainConfig, lr_at, score_crops, set_trainable, train_mode, train_step
from tests.pipeline.train.conftest import astro_sample

CPU = torch.device("cpu")
PROFILE = dataclasses.replace(SEED_PROFILE, name="test-96", input_px=96)  # small: CPU time


def test_batches_are_labelled_real_then_blend_and_fake():
    real, fake = astro_sample(REAL), astro_sample(FAKE, source="other", flip=True)
    x, y = make_batch([(real, True), (fake, False), (real, False)], PROFILE, np.random.default_rng(0), CPU, None)
    assert x.shape == (4, 3, 96, 96) and x.dtype == torch.float32
    assert y.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # the seed profile scales to 0..1
    assert [len(b) for b in batches_of([(real, True)] * 5, 4)] == [2, 2, 1]


def test_validation_set_is_fixed_and_adds_one_blend_per_real_face():
    faces = [astro_sample(REAL), astro_sample(FAKE, source="f", flip=True)]
    crops, labels = validation_set(faces, PROFILE, seed=0, self_blend_on=True)
    again, _ = validation_set(faces, PROFILE, seed=0, self_blend_on=True)
    assert labels.tolist() == [REAL, FAKE, FAKE]
    assert all((a == b).all() for a, b in zip(crops, again, strict=True))
    assert crops[0].shape == (160, 160, 3)


def test_loss_falls_and_the_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_model()
    params = set_trainable(model, "all")
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    units = [(astro_sample(REAL), True), (astro_sample(REAL, source="m", flip=True), True)]
    x, y = make_batch(units, PROFILE, np.random.default_rng(1), CPU, None)
    train_mode(model, "all")
    losses = [train_step(model, optimizer, x, y) for _ in range(4)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(math.isfinite(v) for v in losses)

    path = save_checkpoint(model, tmp_path / "tiny.pth", PROFILE, epoch=1, optimizer_state_dict=optimizer.state_dict())
    loaded = load_model(path, CPU)
    assert loaded.info.profile == PROFILE and not loaded.info.untrained
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), model(x))
    state = read_training_state(path)
    assert state["epoch"] == 1
    fresh = torch.optim.AdamW(build_model().parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer_state_dict"])  # resumable
    probs = score_crops(loaded.module, [c for c in _crops(units)], PROFILE, CPU)
    assert probs.shape == (2,) and ((0 <= probs) & (probs <= 1)).all()


def _crops(units):
    return [u[0].crop(PROFILE) for u in units]


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 1e-3, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, 100, 1e-3, 0.1) == pytest.approx(0.0, abs=1e-12)


def test_head_training_freezes_the_backbone_and_its_statistics():
    model = build_model()
    params = set_trainable(model, "head")
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"last_linear", "last_bn", "logits"}
    assert len(params) == sum(1 for p in model.parameters() if p.requires_grad)
    train_mode(model, "head")
    assert model.last_bn.training and not model.conv2d_1a.training and not model.block8.training


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"real_dirs": ()}, "real faces"),
        ({"self_blend": False}, "no fakes"),
        ({"trainable": "some"}, "trainable"),
        ({"input_px": 64}, "input_px"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_config_refuses_what_cannot_train(tmp_path, kwargs, match):
    base = {"out": tmp_path / "m.pth", "real_dirs": (tmp_path,), "self_blend": True}
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{**base, **kwargs})
