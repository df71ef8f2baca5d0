"""Checkpoint finding, loading and saving: every layout we accept and every way a file can be wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from pipeline.errors import CheckpointError, NoModel
from pipeline.models import (
    SEED_PROFILE,
    build_model,
    file_sha256,
    find_checkpoint,
    load_model,
    save_checkpoint,
)
from pipeline.types import PreprocessProfile

CPU = torch.device("cpu")


class Payload:
    """A custom class: pickling an instance of it is what weights_only must refuse."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return build_model().state_dict()


def _same_weights(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    got = module.state_dict()
    return set(got) == set(sd) and all(torch.equal(got[k].cpu(), sd[k]) for k in sd)


def test_loads_seed_format_dict(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "resnetinceptionv1_epoch_32.pth"
    torch.save({"epoch": 32, "model_state_dict": state_dict, "optimizer_state_dict": {"lr": 0.001}}, path)
    loaded = load_model(path, CPU)
    assert _same_weights(loaded.module, state_dict)
    assert not loaded.module.training
    info = loaded.info
    assert (info.name, info.device, info.untrained) == (path.name, "cpu", False)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert info.profile == SEED_PROFILE


def test_loads_bare_state_dict(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "bare.pt"
    torch.save(state_dict, path)
    assert _same_weights(load_model(path, CPU).module, state_dict)


@pytest.mark.parametrize("wrapped", [False, True])
def test_loads_dataparallel_prefixed_keys(tmp_path: Path, state_dict: dict[str, torch.Tensor], wrapped: bool) -> None:
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    path = tmp_path / "dp.pth"
    torch.save({"model_state_dict": prefixed} if wrapped else prefixed, path)
    assert _same_weights(load_model(path, CPU).module, state_dict)


def test_save_checkpoint_round_trips_weights_and_default_profile(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_model()
    path = save_checkpoint(model, tmp_path / "sub" / "ours.pth", epoch=3, note="smoke")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 3 and raw["note"] == "smoke" and "model_state_dict" in raw
    loaded = load_model(path, CPU)
    assert _same_weights(loaded.module, model.state_dict())
    assert loaded.info.profile == SEED_PROFILE


def test_declared_preprocess_profile_round_trips(tmp_path: Path) -> None:
    profile = PreprocessProfile(
        name="ours-v2",
        crop_px=224,
        margin_px=20,
        input_px=224,
        resize="bilinear",
        scale=1 / 255,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    path = save_checkpoint(build_model(), tmp_path / "p.pth", profile)
    assert load_model(path, CPU).info.profile == profile


@pytest.mark.parametrize(
    "preprocess",
    [{"name": "x", "bogus": 1}, {"name": "x"}, "seed", {**dataclasses.asdict(SEED_PROFILE), "crop_px": -1}],
)
def test_invalid_preprocess_entry_is_a_checkpoint_error(
    tmp_path: Path, state_dict: dict[str, torch.Tensor], preprocess: object
) -> None:
    path = tmp_path / "bad_profile.pth"
    torch.save({"model_state_dict": state_dict, "preprocess": preprocess}, path)
    with pytest.raises(CheckpointError, match="preprocess"):
        load_model(path, CPU)


@pytest.mark.parametrize("where", ["top", "nested"])
def test_refuses_pickled_objects(tmp_path: Path, state_dict: dict[str, torch.Tensor], where: str) -> None:
    path = tmp_path / "evil.pth"
    torch.save(Payload() if where == "top" else {"model_state_dict": state_dict, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refuses to load arbitrary pickled objects"):
        load_model(path, CPU)


def test_wrong_shapes_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "two_class.pth"
    torch.save({"model_state_dict": InceptionResnetV1(classify=True, num_classes=2).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"wrong shapes: logits\.weight \(2, 512\)"):
        load_model(path, CPU)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    sd = {k: v for k, v in state_dict.items() if not k.startswith("logits.")}
    sd["head.extra"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, CPU)
    assert "missing keys: logits.weight, logits.bias" in str(err.value)
    assert "unexpected keys: head.extra" in str(err.value)


def test_dict_without_state_dict_names_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"weights": [1, 2], "epoch": 4}, path)
    with pytest.raises(CheckpointError, match=r"top-level keys \['epoch', 'weights'\]"):
        load_model(path, CPU)


def test_non_dict_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="found a list"):
        load_model(path, CPU)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n" * 10, os.urandom(4096)])
def test_random_bytes_are_a_checkpoint_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_model(path, CPU)


def test_truncated_checkpoint(tmp_path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"model_state_dict": state_dict}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch file"):
        load_model(path, CPU)


def test_missing_file_is_no_model(tmp_path: Path) -> None:
    with pytest.raises(NoModel, match="nope.pth"):
        load_model(tmp_path / "nope.pth", CPU)
    with pytest.raises(CheckpointError, match="not a file"):
        load_model(tmp_path, CPU)


def test_untrained_needs_permission_and_is_deterministic() -> None:
    with pytest.raises(NoModel):
        load_model(None, CPU)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_model(None, CPU, allow_untrained=True)
    assert torch.equal(torch.rand(3), expected_next), "loading must not disturb the global RNG"
    b = load_model(None, CPU, allow_untrained=True)
    assert _same_weights(b.module, a.module.state_dict())
    assert (a.info.name, a.info.sha256, a.info.untrained, a.info.profile) == (
        "UNTRAINED",
        "untrained",
        True,
        SEED_PROFILE,
    )


def test_find_checkpoint_picks_the_newest(tmp_path: Path) -> None:
    for name, mtime in {"old.pth": 1_000, "newest.pt": 3_000, "middle.pth": 2_000, "notes.txt": 9_000}.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    assert find_checkpoint(None, tmp_path) == tmp_path / "newest.pt"
    assert find_checkpoint(tmp_path / "old.pth", tmp_path) == tmp_path / "old.pth"


@pytest.mark.parametrize("make_dir", [True, False])
def test_find_checkpoint_explains_how_to_get_one(tmp_path: Path, make_dir: bool) -> None:
    models = tmp_path / "models"
    if make_dir:
        models.mkdir()
        (models / "README.txt").write_text("not a checkpoint")
    with pytest.raises(NoModel) as err:
        find_checkpoint(None, models)
    message = str(err.value)
    for needle in ("--checkpoint", "DFF_CHECKPOINT", "resnetinceptionv1_epoch_32.pth", str(models), "dff train"):
        assert needle in message


def test_find_checkpoint_explicit_missing_names_it(tmp_path: Path) -> None:
    with pytest.raises(NoModel, match="gone.pth"):
        find_checkpoint(tmp_path / "gone.pth", tmp_path)


def test_build_model_is_single_logit() -> None:
    model = build_model().eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 160, 160)).shape == (2, 1)
