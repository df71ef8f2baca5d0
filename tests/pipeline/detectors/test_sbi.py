"""SBI's EfficientNet-B4: its release format round-trips through weights_only, scores, explains, and refuses
every other file with a message that says what it found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet
from facenet_pytorch import InceptionResnetV1
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pipeline.detectors.sbi import SBI_FEATURE_DIM, SBI_INPUT_PX, SbiEfficientNetB4, looks_like_sbi, read_sbi
from pipeline.errors import CheckpointError


class Detector(torch.nn.Module):
    """Stand-in for the authors' ``Detector``: one submodule ``net``, the library's own forward."""

    def __init__(self, arch: str = "efficientnet-b4", num_classes: int = 2) -> None:
        super().__init__()
        self.net = EfficientNet.from_name(arch, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _faces(n: int, px: int, seed: int) -> torch.Tensor:
    """N×3×px×px float32 in [0, 1]: smooth stripes plus noise, different per image (iid noise alone
    pools to the same features for every image)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, px), torch.linspace(0, 1, px), indexing="ij")
    out = []
    for _ in range(n):
        f = 1 + 3 * torch.rand(3, generator=g)
        smooth = torch.stack([torch.sin(6 * f[0] * xx) ** 2, torch.cos(5 * f[1] * yy) ** 2, (xx * yy) ** f[2]])
        out.append(0.6 * smooth + 0.4 * torch.rand(3, px, px, generator=g))
    return torch.stack(out)


def _calibrate(model: torch.nn.Module) -> None:
    """Random weights whose BN running stats fit their activations; with the defaults (0 and 1) the
    signal fades block by block and every input gets the same logits, which would test nothing."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # cumulative average: one batch sets the stats exactly
            mod.reset_running_stats()
    with torch.no_grad():
        model.train()
        model(_faces(4, 160, seed=7))
    model.eval()


def _release(detector: Detector) -> dict:
    """The dict src/train_sbi.py saves: model, optimizer (SAM over SGD: e_w per parameter, rho in the
    param groups) and epoch."""
    params = list(detector.parameters())
    opt = torch.optim.SGD(params, lr=0.001, momentum=0.9).state_dict()
    opt["param_groups"][0]["rho"] = 0.05
    opt["state"] = {i: {"e_w": torch.zeros_like(p)} for i, p in enumerate(params)}
    return {"model": detector.state_dict(), "optimizer": opt, "epoch": 99}


@pytest.fixture(scope="module")
def reference() -> Detector:
    torch.manual_seed(0)
    detector = Detector()
    _calibrate(detector)
    return detector


@pytest.fixture(scope="module")
def loaded_obj(reference: Detector, tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("sbi") / "sbi.tar"
    torch.save(_release(reference), path)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model(loaded_obj: dict) -> SbiEfficientNetB4:
    return read_sbi(loaded_obj, "sbi.tar")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return _faces(2, SBI_INPUT_PX, seed=1)


@pytest.fixture(scope="module")
def want(reference: Detector, faces: torch.Tensor) -> torch.Tensor:
    """The authors' module's logits for ``faces``: N×2."""
    with torch.no_grad():
        return reference(faces)


def test_release_format_loads_and_is_recognised(loaded_obj: dict, model: SbiEfficientNetB4) -> None:
    assert sorted(loaded_obj) == ["epoch", "model", "optimizer"]
    assert looks_like_sbi(loaded_obj)
    assert list(model.state_dict()) == list(loaded_obj["model"])
    assert all(k.startswith("net.") for k in model.state_dict())
    assert not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_scores_like_the_authors_module(model: SbiEfficientNetB4, faces: torch.Tensor, want: torch.Tensor) -> None:
    with torch.no_grad():
        got = model(faces)
    assert got.shape == (2, 2) and got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (want[0] - want[1]).abs().max() > 1e-3  # the inputs matter, or this compared constants


def test_grad_cam_and_embedding(model: SbiEfficientNetB4, faces: torch.Tensor, want: torch.Tensor) -> None:
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.embedding_layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("emb", out.detach())),
        model.cam_target.register_forward_hook(lambda _m, _i, out: seen.__setitem__("map", out.detach())),
    ]
    flags = [p.requires_grad for p in model.parameters()]
    # the engine's rule (DESIGN §3): freeze all but the target's parameters; the target still has a graph
    model.requires_grad_(False)
    model.cam_target.requires_grad_(True)
    try:
        assert sum(p.requires_grad for p in model.parameters()) == 3  # conv_head.weight, bn1.weight, bn1.bias
        with GradCAM(model=model, target_layers=[model.cam_target]) as cam:
            heat = cam(input_tensor=faces, targets=[ClassifierOutputTarget(1)] * 2)
            logits = cam.outputs.detach()
    finally:
        for hook in hooks:
            hook.remove()
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    assert heat.shape == (2, SBI_INPUT_PX, SBI_INPUT_PX) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0.5
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)
    emb, fmap = seen["emb"], seen["map"]
    assert emb.shape == (2, SBI_FEATURE_DIM) and torch.isfinite(emb).all()
    assert fmap.shape == (2, SBI_FEATURE_DIM, 12, 12)
    torch.testing.assert_close(emb, fmap.mean(dim=(2, 3)))
    # on the post-activation head map, Grad-CAM's channel weights are the fc row of class 1 over 12×12:
    # the heatmap is relu(sum_k w_k A_k), min-max scaled, resized, scaled again (grad-cam's steps);
    # a pre-activation target would weigh the channels differently
    w = model.net._fc.weight.detach()[1]
    manual = torch.relu(torch.einsum("k,nkhw->nhw", w, fmap)).numpy()
    want = scale_cam_image(scale_cam_image(manual, (SBI_INPUT_PX, SBI_INPUT_PX)))
    np.testing.assert_allclose(heat, want, atol=1e-4)


def test_grad_cam_same_with_either_swish(model: SbiEfficientNetB4) -> None:
    """efficientnet_pytorch's custom-autograd Swish takes Grad-CAM's hooks like the plain one (the target's
    output is that Function's output); frozen as the engine freezes, to keep the backward short."""
    x = _faces(1, 128, seed=3)
    heats = []
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    model.cam_target.requires_grad_(True)
    try:
        for memory_efficient in (True, False):
            model.set_swish(memory_efficient)
            with GradCAM(model=model, target_layers=[model.cam_target]) as cam:
                heats.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(1)]))
    finally:
        model.set_swish(True)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    np.testing.assert_allclose(heats[0], heats[1], atol=1e-4)


def test_cam_target_adds_no_state(model: SbiEfficientNetB4) -> None:
    assert model.cam_target.conv is model.net._conv_head and model.cam_target.bn is model.net._bn1
    assert all(m is not model.cam_target for m in model.modules())
    assert set(SbiEfficientNetB4().state_dict()) == set(Detector().state_dict())


def _errors_for(obj: object) -> str:
    with pytest.raises(CheckpointError) as err:
        read_sbi(obj, "weights.pt")  # type: ignore[arg-type]
    assert "weights.pt" in str(err.value)
    return str(err.value)


def test_inception_resnet_is_not_sbi() -> None:
    sd = InceptionResnetV1(classify=True, num_classes=1).state_dict()
    for obj in (sd, {"model": sd}, {"model_state_dict": sd}):
        assert not looks_like_sbi(obj)
        assert "not an SBI checkpoint" in _errors_for(obj)


def test_keys_without_net_prefix(loaded_obj: dict) -> None:
    bare = {k.removeprefix("net."): v for k, v in loaded_obj["model"].items()}
    assert not looks_like_sbi({"model": bare})
    assert "under 'net.'" in _errors_for({"model": bare})


def test_efficientnet_b0_in_sbi_format(tmp_path: Path) -> None:
    path = tmp_path / "b0.tar"
    torch.save(_release(Detector("efficientnet-b0")), path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert looks_like_sbi(obj)  # the format is SBI's; read_sbi then names the variant
    msg = _errors_for(obj)
    assert "EfficientNet-B0" in msg and "net._conv_head.weight (1280, 320, 1, 1)" in msg


def test_b4_with_imagenet_head(loaded_obj: dict) -> None:
    sd = dict(loaded_obj["model"])
    sd["net._fc.weight"] = torch.zeros(1000, SBI_FEATURE_DIM)
    sd["net._fc.bias"] = torch.zeros(1000)
    assert "1000 classes" in _errors_for({"model": sd})


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda sd: sd.pop("net._bn1.running_var"), "1 missing keys: net._bn1.running_var"),
        (lambda sd: sd.__setitem__("net.extra.weight", torch.zeros(1)), "1 unexpected keys: net.extra.weight"),
        (lambda sd: sd.__setitem__("net._bn0.weight", torch.zeros(7)), "net._bn0.weight (7,) (B4 wants (48,))"),
        (lambda sd: sd.__setitem__("net._bn0.bias", [0.0] * 48), "not tensors: net._bn0.bias"),
    ],
)
def test_names_what_does_not_fit(loaded_obj: dict, edit: object, expected: str) -> None:
    sd = dict(loaded_obj["model"])
    edit(sd)  # type: ignore[operator]
    assert expected in _errors_for({"model": sd})


@pytest.mark.parametrize("obj", [None, [1, 2], {"model": None}, {"model": {}}, {"state_dict": {}}])
def test_not_a_release_dict(obj: object) -> None:
    assert not looks_like_sbi(obj)
    assert "not an SBI checkpoint" in _errors_for(obj) or "does not fit" in _errors_for(obj)
