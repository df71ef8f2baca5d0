"""MesoNet: the loader against a numpy Keras reference on files made here, its refusals, and parity with the
authors' published weights on their own example faces (when ../shared has them)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.detectors.mesonet import MESONET_INPUT_PX, Meso4, MesoInception4, MesoNet, is_hdf5, read_mesonet_h5
from pipeline.errors import CheckpointError, NoModel
from tests.media import SHARED
from tests.mesonet_h5 import (
    MESO4_LAYER_NAMES,
    keras_logits,
    random_weights,
    write_keras_h5,
    write_mesonet_h5,
)

ARCH_CLASS = {"meso4": Meso4, "inception": MesoInception4}


def _images(n: int, seed: int) -> np.ndarray:
    """N×256×256×3 float32 in [0, 1]: noise plus a smooth gradient, so pools see structure at every scale."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, MESONET_INPUT_PX, dtype=np.float32)
    smooth = (ramp[None, :, None, None] * ramp[None, None, :, None]) * rng.uniform(0, 1, (n, 1, 1, 3))
    return np.clip(0.5 * smooth + 0.5 * rng.uniform(0, 1, (n, MESONET_INPUT_PX, MESONET_INPUT_PX, 3)), 0, 1)


def _forward(model: MesoNet, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc.astype(np.float32)).permute(0, 3, 1, 2)).double().numpy()


@pytest.mark.parametrize("full_model", [False, True], ids=["save_weights", "model_save"])
@pytest.mark.parametrize("arch", ["meso4", "inception"])
def test_loader_matches_a_numpy_keras_forward_pass(tmp_path: Path, arch: str, full_model: bool) -> None:
    weights = write_mesonet_h5(tmp_path / "m.h5", arch, seed=3, full_model=full_model)
    model = read_mesonet_h5(tmp_path / "m.h5")
    assert type(model) is ARCH_CLASS[arch] and not model.training
    assert next(model.parameters()).device.type == "cpu"
    images = _images(3, seed=4)
    expected = keras_logits(arch, weights, images)
    assert np.ptp(expected) > 1e-2, "the images barely move the logit: the comparison would prove little"
    got = _forward(model, images)
    assert got.shape == (3, 1)
    # float32 against float64 lands within ~1e-6 here; a BN epsilon of 1e-5 instead of 1e-3 moves it 7e-4.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["meso4", "inception"])
def test_cam_target_and_embedding_shapes(tmp_path: Path, arch: str) -> None:
    write_mesonet_h5(tmp_path / "m.h5", arch)
    model = read_mesonet_h5(tmp_path / "m.h5")
    seen: dict[str, torch.Size] = {}
    hooks = [
        model.cam_target.register_forward_hook(lambda m, i, o: seen.__setitem__("cam", o.shape)),
        model.embedding_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("embed", o.shape)),
    ]
    model(torch.rand(2, 3, MESONET_INPUT_PX, MESONET_INPUT_PX))
    for hook in hooks:
        hook.remove()
    assert seen == {"cam": (2, 16, 32, 32), "embed": (2, 16)}
    # The target is a conv + ReLU with parameters of its own, none registered twice in the state dict.
    assert [p.shape for p in model.cam_target.parameters()] == [(16, 16, 5, 5), (16,)]
    assert len(model.state_dict()) == len(list(model.parameters())) + 3 * 4  # + 4 BNs × 3 buffers
    # DESIGN §3's Grad-CAM freeze: all but the target block frozen, the target's output still has a graph.
    model.requires_grad_(False).cam_target.requires_grad_(True)
    maps: list[torch.Tensor] = []
    hook = model.cam_target.register_forward_hook(lambda m, i, o: maps.append(o))
    logit = model(torch.rand(1, 3, MESONET_INPUT_PX, MESONET_INPUT_PX))
    hook.remove()
    (grad,) = torch.autograd.grad(logit.sum(), maps[0])
    assert grad.shape == (1, 16, 32, 32) and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="N×3×256×256"):
        model(torch.rand(1, 3, 128, 128))


def test_is_hdf5(tmp_path: Path) -> None:
    write_mesonet_h5(tmp_path / "m.h5", "meso4")
    (tmp_path / "t.txt").write_text("hello")
    (tmp_path / "short").write_bytes(b"\x89HD")
    assert is_hdf5(tmp_path / "m.h5")
    assert not is_hdf5(tmp_path / "t.txt")
    assert not is_hdf5(tmp_path / "short")
    assert not is_hdf5(tmp_path / "missing.h5")


def test_other_layers_are_refused_naming_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    other = {
        "conv2d_1": {"kernel": rng.normal(size=(3, 3, 3, 32)).astype(np.float32), "bias": np.zeros(32, np.float32)},
        "dense_1": {"kernel": np.zeros((32, 10), np.float32), "bias": np.zeros(10, np.float32)},
    }
    write_keras_h5(tmp_path / "other.h5", ["input_1", "conv2d_1", "flatten_1", "dense_1"], other)
    with pytest.raises(CheckpointError, match=r"layers are \[conv2d_1 \(3, 3, 3, 32\), dense_1 \(32, 10\)\]"):
        read_mesonet_h5(tmp_path / "other.h5")


def test_a_meso4_with_one_wrong_shape_is_refused(tmp_path: Path) -> None:
    weights = random_weights("meso4", np.random.default_rng(0))
    weights["dense_3"]["kernel"] = np.zeros((2048, 16), np.float32)
    write_keras_h5(tmp_path / "wide.h5", MESO4_LAYER_NAMES, weights)
    with pytest.raises(
        CheckpointError,
        match=r"batch_normalization_8 \(16,\), dense_3 \(2048, 16\).*not MesoNet's Meso4 or MesoInception4",
    ):
        read_mesonet_h5(tmp_path / "wide.h5")


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    weights = random_weights("meso4", np.random.default_rng(0))
    weights["conv2d_6"]["kernel"][0, 0, 0, 0] = np.nan
    write_keras_h5(tmp_path / "nan.h5", MESO4_LAYER_NAMES, weights)
    with pytest.raises(CheckpointError, match="non-finite values in .*conv2d_6/kernel"):
        read_mesonet_h5(tmp_path / "nan.h5")


def test_truncated_text_and_plain_hdf5_files_are_refused(tmp_path: Path) -> None:
    whole = tmp_path / "m.h5"
    write_mesonet_h5(whole, "meso4")
    data = whole.read_bytes()
    for keep in (len(data) // 2, 4096):
        cut = tmp_path / f"cut{keep}.h5"
        cut.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="truncated or damaged HDF5 file"):
            read_mesonet_h5(cut)
    (tmp_path / "t.h5").write_text("not weights at all\n")
    with pytest.raises(CheckpointError, match=r"t.h5 is not an HDF5 file \(it starts with b'not weig'"):
        read_mesonet_h5(tmp_path / "t.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"no Keras 'layer_names' attribute \(top-level keys: \['data'\]\)"):
        read_mesonet_h5(tmp_path / "plain.h5")
    with pytest.raises(NoModel):
        read_mesonet_h5(tmp_path / "missing.h5")


# --- parity with the authors' published weights ---------------------------------------------------------------

MESONET_DIR = SHARED / "detectors" / "mesonet"
FACES = ("df/df00204.jpg", "df/df01254.jpg", "real/real00240.jpg", "real/real00772.jpg")
# P(real) on FACES, from ../shared/detectors/mesonet/README.md.
REFERENCE_P_REAL = {"Meso4_DF": (0.051, 0.035, 0.990, 0.999), "Meso4_F2F": (0.816, 0.715, 0.881, 0.955)}


def _published(name: str) -> Path:
    path = MESONET_DIR / "weights" / f"{name}.h5"
    if not path.is_file():
        pytest.skip(f"{path} not present (the published MesoNet weights are only on developer machines)")
    return path


def _faces() -> torch.Tensor:
    """FACES resized whole to 256×256 as the reference values were made: Pillow's default resize filter,
    BICUBIC (all 8 within 0.0005; Pillow/torch/OpenCV bilinear miss by 0.01-0.035), then / 255."""
    arrays = [
        np.asarray(Image.open(MESONET_DIR / "test_images" / f).convert("RGB").resize((256, 256), Image.BICUBIC))
        for f in FACES
    ]
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255).permute(0, 3, 1, 2)


def _p_real(name: str) -> np.ndarray:
    model = read_mesonet_h5(_published(name))
    with torch.no_grad():
        return torch.sigmoid(model(_faces()))[:, 0].double().numpy()


@pytest.mark.parametrize("name", sorted(REFERENCE_P_REAL))
def test_meso4_published_weights_reproduce_the_reference_values(name: str) -> None:
    p_real = _p_real(name)
    assert type(read_mesonet_h5(_published(name))) is Meso4
    np.testing.assert_allclose(p_real, REFERENCE_P_REAL[name], atol=0.005)


@pytest.mark.parametrize("name", ["MesoInception_DF", "MesoInception_F2F"])
def test_mesoinception_published_weights_load_and_the_df_model_separates(name: str) -> None:
    p_real = _p_real(name)
    assert type(read_mesonet_h5(_published(name))) is MesoInception4
    assert np.isfinite(p_real).all() and ((p_real >= 0) & (p_real <= 1)).all()
    if name.endswith("_DF"):  # measured: 0.027, 0.0014 (df) vs 1.000, 1.000 (real)
        assert p_real[:2].max() < p_real[2:].min()
