"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): the authors' EfficientNet-B4, read from their release.

The release (``sbi.tar`` in mapooon/SelfBlendedImages) is the training script's checkpoint,
``{"model": Detector.state_dict(), "optimizer": ..., "epoch": int}`` (src/train_sbi.py), where ``Detector``
holds one submodule, ``net = EfficientNet.from_pretrained("efficientnet-b4", advprop=True, num_classes=2)``
(src/model.py, src/inference/model.py): every weight key starts with ``net.``. It holds tensors and plain
values only, so it loads with ``torch.load(..., weights_only=True)``.

What their inference feeds the net (src/inference/preprocess.py, inference_image.py, inference_video.py):
- the face: the RetinaFace box widened by 1/8 of its width and height on every side (``crop_face`` with
  ``phase="test"``: margin w/4 * 0.5), clipped to the frame, resized to 380×380 with ``cv2.resize``
  (bilinear; the box's aspect ratio is not kept), **RGB** (PIL for images, ``cv2.COLOR_BGR2RGB`` for
  video frames). In facenet's ``extract_face`` terms the 1.25× box is ``margin = 0.2 * image_size``
  (76 px of 380), on an MTCNN box instead of a RetinaFace one;
- N×3×380×380 float32 = uint8 / 255, **no mean/std and no [-1, 1] mapping**. ``advprop=True`` only picks
  which ImageNet weights ``from_pretrained`` downloads (efficientnet_pytorch utils ``url_map_advprop``);
  the architecture is the same, and the [-1, 1] input those weights were pretrained on was never used:
  fine-tuning (src/utils/sbi.py: ``cv2.resize(...) / 255``) and inference both feed [0, 1];
- ``softmax(logits, 1)[:, 1]`` is P(fake); a frame scores the max over its faces, a video the mean of frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import get_model_params, round_filters, round_repeats

from pipeline.errors import CheckpointError

SBI_INPUT_PX = 380
SBI_FEATURE_DIM = 1792  # EfficientNet-B4's head channels: the pooled per-face feature vector
_ARCH = "efficientnet-b4"
_PREFIX = "net."
_MARKERS = ("net._conv_stem.weight", "net._bn0.weight", "net._conv_head.weight", "net._bn1.weight", "net._fc.weight")
_SHOW = 5  # keys named per kind of problem in an error message


class HeadStage(torch.nn.Module):
    """EfficientNet's head, ``swish(bn1(conv_head(x)))``: N×C×h×w -> N×1792×h×w (12×12 at 380 px).

    Holds the net's own ``_conv_head``/``_bn1``/``_swish`` (the same module objects, not copies).
    """

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.conv = net._conv_head
        self.bn = net._bn1
        self.act = net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SbiEfficientNetB4(torch.nn.Module):
    """SBI's detector: N×3×380×380 float32 RGB in [0, 1] -> N×2 logits; P(fake) = ``softmax(logits, 1)[:, 1]``.

    ``state_dict()`` keys are exactly the release's (``net.…``). For Grad-CAM and tracking:
    ``cam_target`` outputs the final feature map N×1792×12×12 (post-activation) and ``embedding_layer``
    outputs the pooled per-face feature N×1792.
    """

    def __init__(self, *, memory_efficient_swish: bool = True) -> None:
        """``memory_efficient_swish``: efficientnet_pytorch's custom-autograd Swish (the library default);
        same values and gradients as the plain one, Grad-CAM works with both (tests/pipeline/detectors)."""
        super().__init__()
        self.net = EfficientNet.from_name(_ARCH, num_classes=2)
        # The Grad-CAM target must output the post-activation head map (what is pooled into the logits:
        # Grad-CAM there equals the class activation map) *and* own parameters, because the engine freezes
        # everything but the target's parameters, and a target without any carries no graph. No single
        # module of the library does both: ``_bn1`` is pre-activation and ``_swish`` is one module shared
        # by the stem and the head (a hook on it fires twice). So the head is wrapped, and the wrapper is
        # kept out of the module tree (``__dict__``, not a submodule): registered, it would add a second
        # copy of the head's keys to ``state_dict()``. Its children are the net's own modules, so
        # ``.to()``, ``.eval()`` and ``requires_grad_`` on this module reach them as usual.
        self.__dict__["cam_target"] = HeadStage(self.net)
        self.embedding_layer = torch.nn.Identity()  # no parameters: adds no state_dict keys
        self.set_swish(memory_efficient_swish)

    cam_target: HeadStage

    def set_swish(self, memory_efficient: bool) -> None:
        """Switch every Swish of the net (and of ``cam_target``) between the custom-autograd and plain one."""
        self.net.set_swish(memory_efficient=memory_efficient)
        self.cam_target.act = self.net._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×380×380 float32 -> N×2 logits; the same computation as ``self.net(x)``, spelled out so
        that ``cam_target`` and ``embedding_layer`` run on the way (efficientnet_pytorch 0.7.1's
        ``extract_features`` + ``forward``; a test checks the two agree)."""
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        rate = net._global_params.drop_connect_rate
        for idx, block in enumerate(net._blocks):
            # drop-connect only acts in training mode; passed the library's way so training matches too
            h = block(h, drop_connect_rate=rate * float(idx) / len(net._blocks) if rate else rate)
        h = self.cam_target(h)
        h = self.embedding_layer(net._avg_pooling(h).flatten(start_dim=1))
        return net._fc(net._dropout(h))


def looks_like_sbi(obj: object) -> bool:
    """True when a ``torch.load(..., weights_only=True)`` result is in SBI's release format: a dict whose
    ``"model"`` is a state dict with every key under ``net.`` and EfficientNet's stem, head and fc keys.

    Says nothing about the variant: an EfficientNet-B0 saved the same way is SBI-shaped too, and
    ``read_sbi`` then names what it found (a clearer message than "unknown format").
    """
    if not isinstance(obj, Mapping):
        return False
    sd = obj.get("model")
    if not isinstance(sd, Mapping) or not sd:
        return False
    if not all(isinstance(k, str) and k.startswith(_PREFIX) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        return False
    return all(key in sd for key in _MARKERS)


def _head_and_depth(variant: int) -> tuple[int, int]:
    """EfficientNet-B``variant``'s head channels and number of MBConv blocks (B0: 1280, 16; B4: 1792, 32)."""
    blocks_args, params = get_model_params(f"efficientnet-b{variant}", None)
    return round_filters(1280, params), sum(round_repeats(b.num_repeat, params) for b in blocks_args)


def _variant_of(sd: Mapping[str, torch.Tensor]) -> str | None:
    """Which EfficientNet-B0..B8 the head width and block count say, e.g. ``"EfficientNet-B0 (head
    (1280, 320, 1, 1), 16 blocks)"``, or None when they fit none."""
    head = sd.get("net._conv_head.weight")
    if not isinstance(head, torch.Tensor) or head.dim() != 4:
        return None
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("net._blocks.")})
    for i in range(9):
        if (head.shape[0], n_blocks) == _head_and_depth(i):
            return f"EfficientNet-B{i} (net._conv_head.weight {tuple(head.shape)}, {n_blocks} blocks)"
    return None


def _problems(expected: Mapping[str, torch.Tensor], sd: Mapping[str, object]) -> list[str]:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    not_tensors = [k for k in expected if k in sd and not isinstance(sd[k], torch.Tensor)]
    wrong = [
        f"{k} {tuple(v.shape)} (B4 wants {tuple(expected[k].shape)})"
        for k, v in sd.items()
        if k in expected and isinstance(v, torch.Tensor) and v.shape != expected[k].shape
    ]
    problems = []
    for label, keys in (
        ("wrong shapes", wrong),
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("values that are not tensors", not_tensors),
    ):
        if keys:
            more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:_SHOW])}{more}")
    return problems


def read_sbi(obj: dict, name: str) -> SbiEfficientNetB4:
    """The SBI detector (eval mode, CPU, fp32) from a loaded release checkpoint ``obj``; ``name`` (the
    file's name) goes into error messages.

    Raises CheckpointError when ``obj`` is not in the release format or its ``"model"`` does not fit
    EfficientNet-B4 with two classes exactly (every key, every shape).
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
        found = sorted(map(str, obj))[:_SHOW] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{name}: not an SBI checkpoint: expected a dict with a 'model' state dict, found {found}"
        )
    sd: Mapping[str, object] = obj["model"]
    if sd and not any(str(k).startswith(_PREFIX) for k in sd):
        hint = ""
        if "_conv_stem.weight" in sd:
            hint = " (these are bare efficientnet_pytorch keys; SBI's Detector saves them under 'net.')"
        raise CheckpointError(f"{name}: not an SBI checkpoint: no 'model' key starts with 'net.'{hint}")
    model = SbiEfficientNetB4()
    expected = model.state_dict()
    problems = _problems(expected, sd)
    if problems:
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        variant = _variant_of(tensors)
        fc = tensors.get("net._fc.weight")
        b4 = variant is not None and variant.startswith("EfficientNet-B4 ")
        if variant is not None and not b4:
            width, depth = _head_and_depth(4)
            b4_is = f"EfficientNet-B4 ({width} head channels, {depth} blocks)"
            what = f"; its shapes look like {variant}, and SBI's release is {b4_is}"
        elif b4 and fc is not None and fc.dim() == 2 and fc.shape[0] != 2:
            what = f"; it is EfficientNet-B4 with {fc.shape[0]} classes, and SBI's head has 2 (real, fake)"
        else:
            what = ""
        raise CheckpointError(
            f"{name} does not fit SBI's EfficientNet-B4 (num_classes=2){what}: " + "; ".join(problems)
        )
    model.load_state_dict(sd, strict=True)  # type: ignore[arg-type]  # every value was checked a tensor
    return model.float().eval()
