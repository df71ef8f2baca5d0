"""The detector registry: every classifier architecture the service can run, and what each one needs.

A ``DetectorSpec`` says everything the rest of the pipeline must know about an architecture, so no other
module names one:

- its architecture and checkpoint format (in words, for errors, reports and ``dff models``);
- its preprocessing profile (crop margin/size, input size, resize, value scaling/normalisation);
- what its output means (``Output``): ``fake_logit`` turns the raw N×K output into one logit per face,
  with P(fake) = sigmoid(fake_logit) for all three kinds (for two-class softmax, sigmoid(z1 - z0) is
  exactly softmax[:, 1]), so calibration, Grad-CAM targets and thresholds work the same for every one;
- its Grad-CAM target layer, the layer whose output is the face's embedding (for the tracker), and the
  final linear layer (a model card's temperature is folded into it).

Built in: ``seed-irv1`` (the community InceptionResnetV1 seed; the only one with a low-precision trunk),
``mesonet4`` and ``mesoinception4`` (Afchar et al.'s published Keras weights, pipeline/detectors/mesonet.py)
and ``sbi-effb4`` (Self-Blended Images' EfficientNet-B4 release, pipeline/detectors/sbi.py). Which one a
file holds is recognised from its bytes by ``pipeline.models.load_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

from pipeline.errors import CheckpointError
from pipeline.types import PreprocessProfile

SEED = "seed-irv1"


class Output(Enum):
    """What a detector's raw output means."""

    SIGMOID_FAKE = "sigmoid(logit) = P(fake)"
    SIGMOID_REAL = "sigmoid(logit) = P(real)"
    SOFTMAX_FAKE = "softmax(logits)[:, 1] = P(fake)"


def fake_logit(output: Output, raw: torch.Tensor) -> torch.Tensor:
    """N×K raw output -> N logits with P(fake) = sigmoid(logit)."""
    if output is Output.SIGMOID_FAKE:
        return raw[:, 0]
    if output is Output.SIGMOID_REAL:
        return -raw[:, 0]
    return raw[:, 1] - raw[:, 0]


class FakeLogitTarget:
    """A pytorch-grad-cam target: the fake logit of one face (its raw K outputs), so every detector's
    Grad-CAM shows what pushed it towards *fake*."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def __call__(self, row: torch.Tensor) -> torch.Tensor:
        return fake_logit(self.output, row.reshape(1, -1))[0]


SEED_PROFILE = PreprocessProfile(
    name="seed-v1", crop_px=160, margin_px=0, input_px=256, resize="bilinear", scale=1 / 255, mean=None, std=None
)
# MesoNet's faces: a 256-px crop with context around the face (the authors' examples show the whole head),
# values /255. margin_px 96 of 256 makes the crop 1.6× the detector's box, as on those examples. Bicubic:
# the published P(real) values of the example faces come out (to 5e-4) only with PIL's bicubic resize.
MESONET_PROFILE = PreprocessProfile(
    name="meso-256", crop_px=256, margin_px=96, input_px=256, resize="bicubic", scale=1 / 255, mean=None, std=None
)
# SBI's inference widens the face box by 1/8 of its size on each side (1.25×; src/inference/preprocess.py),
# /255, no normalisation: margin_px 76 of 380 gives the same 1.25× in extract_face terms (its boxes came
# from RetinaFace, ours from MTCNN, and its crop is not squared: an approximation, said here).
SBI_PROFILE = PreprocessProfile(
    name="sbi-380", crop_px=380, margin_px=76, input_px=380, resize="bilinear", scale=1 / 255, mean=None, std=None
)


@dataclass(frozen=True)
class DetectorSpec:
    """One architecture (module docstring). The callables take the built module."""

    name: str
    architecture: str
    checkpoint_format: str
    profile: PreprocessProfile
    output: Output
    cam_layer: str  # where Grad-CAM looks, in words
    build: Callable[[], torch.nn.Module]  # random weights; the loaders fill them in
    target_layer: Callable[[torch.nn.Module], torch.nn.Module]
    embedding_layer: Callable[[torch.nn.Module], torch.nn.Module]  # its output: N×D per-face features
    logit_layer: Callable[[torch.nn.Module], torch.nn.Module]  # the last Linear (temperature folds into it)
    low_precision_trunk: bool = False  # pipeline/classify.py LowPrecisionTrunk applies (seed only)


def _irv1() -> torch.nn.Module:
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(classify=True, num_classes=1, pretrained=None)


def _meso4() -> torch.nn.Module:
    from pipeline.detectors.mesonet import Meso4

    return Meso4()


def _mesoinception4() -> torch.nn.Module:
    from pipeline.detectors.mesonet import MesoInception4

    return MesoInception4()


def _sbi() -> torch.nn.Module:
    from pipeline.detectors.sbi import SbiEfficientNetB4

    return SbiEfficientNetB4()


def _attr(name: str) -> Callable[[torch.nn.Module], torch.nn.Module]:
    return lambda module: getattr(module, name)


def last_linear(module: torch.nn.Module) -> torch.nn.Module:
    """The module's last ``Linear`` in registration order: every built-in detector's output layer."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise CheckpointError(f"{type(module).__name__} has no Linear output layer to calibrate")
    return linears[-1]


def _mesonet(name: str, paper_name: str, build: Callable[[], torch.nn.Module]) -> DetectorSpec:
    """The two MesoNets differ only in their first blocks: same format, faces, output and layers."""
    return DetectorSpec(
        name=name,
        architecture=f"{paper_name} (Afchar et al., WIFS 2018)",
        checkpoint_format="Keras HDF5 weights (the authors' .h5, read with h5py), or this project's torch checkpoint",
        profile=MESONET_PROFILE,
        output=Output.SIGMOID_REAL,
        cam_layer="the fourth conv block",
        build=build,
        target_layer=_attr("cam_target"),
        embedding_layer=_attr("embedding_layer"),
        logit_layer=last_linear,
    )


DETECTORS: dict[str, DetectorSpec] = {
    spec.name: spec
    for spec in (
        DetectorSpec(
            name=SEED,
            architecture="InceptionResnetV1(classify=True, num_classes=1) (facenet-pytorch)",
            checkpoint_format="torch state dict, bare or under 'model_state_dict' (resnetinceptionv1_epoch_32.pth)",
            profile=SEED_PROFILE,
            output=Output.SIGMOID_FAKE,
            cam_layer="block8.branch1[-1]",
            build=_irv1,
            target_layer=lambda m: m.block8.branch1[-1],  # type: ignore[index,union-attr]
            embedding_layer=_attr("last_bn"),
            logit_layer=_attr("logits"),
            low_precision_trunk=True,
        ),
        _mesonet("mesonet4", "Meso-4", _meso4),
        _mesonet("mesoinception4", "MesoInception-4", _mesoinception4),
        DetectorSpec(
            name="sbi-effb4",
            architecture="EfficientNet-B4, 2 classes (Self-Blended Images, Shiohara & Yamasaki, CVPR 2022)",
            checkpoint_format="torch dict with 'model': the state dict of their Detector (keys under 'net.')",
            profile=SBI_PROFILE,
            output=Output.SOFTMAX_FAKE,
            cam_layer="the final feature map, swish(bn1(conv_head))",
            build=_sbi,
            target_layer=_attr("cam_target"),
            embedding_layer=_attr("embedding_layer"),
            logit_layer=last_linear,
        ),
    )
}


def detector(name: str) -> DetectorSpec:
    """The spec called ``name``; CheckpointError listing the known ones otherwise."""
    spec = DETECTORS.get(name)
    if spec is None:
        raise CheckpointError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return spec


def known_formats() -> str:
    """One line per detector: its name and checkpoint format (for 'unknown format' errors)."""
    return "; ".join(f"{s.name}: {s.checkpoint_format}" for s in DETECTORS.values())
