"""MesoNet (Afchar et al., WIFS 2018) in PyTorch, loaded from the authors' Keras 2.1.5 ``.h5`` weight files.

Input: N×3×256×256 float32 RGB, values in [0, 1] (pixels / 255), the whole face resized to 256×256.
Output: N×1 **logits** whose sigmoid is **P(real)** (the authors' classes were folders in alphabetical
order: ``df`` = 0, ``real`` = 1), so ``fake_prob = sigmoid(-logit) = 1 - sigmoid(logit)``.

Keras conventions reproduced here: convolutions and pools use "same" padding (symmetric for the odd
kernels and even sizes used), BatchNormalization epsilon is 1e-3, conv kernels are stored HWIO and dense
kernels in×out, and Flatten runs over channels-last (H, W, C) order. We keep the forward pass NCHW and
instead permute the first dense kernel's rows from (H, W, C) to (C, H, W) order once, at load time.

The weight files carry no model config, only layer names, weight names and shapes. Like Keras'
``load_weights``, we pair the file's weighted layers *in the order of its ``layer_names``* with ours, and
check every shape. What the file cannot say (the inception concat order, the dilations, the activation
after Meso-4's dense-16) follows the paper and is pinned by the parity values on the authors' example
faces: with Meso-4 the one face already 256×256 (no resize involved) gives P(real) 0.990 (DF) and 0.881
(F2F) only with LeakyReLU(0.1) after dense-16 (identity: 1.000, 0.992; ReLU: 0.977, 0.845), and of the
24 inception concat orders only branch order 1-2-3-4 separates the DF examples. Those reference values
come from Pillow's ``Image.resize((256, 256))`` default filter, BICUBIC (all 8 within 0.0005); bilinear
resizes (Pillow, torch, OpenCV) miss by 0.01-0.035. Never imports TensorFlow or Keras.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from pipeline.errors import CheckpointError, NoModel

MESONET_INPUT_PX = 256
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_BN_EPS = 1e-3  # Keras' BatchNormalization default; torch's is 1e-5
_FEATURE_HW = MESONET_INPUT_PX // 32  # pools 2·2·2·4: the last feature map is 8×8
_FEATURE_C = 16
_EMBED_DIM = 16
_DROPOUT_P = 0.5  # training only: dropout is the identity in eval mode


def _conv_relu(in_c: int, out_c: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """Keras ``Conv2D(out_c, kernel, padding="same", dilation_rate=dilation, activation="relu")``."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(in_c, out_c, kernel, padding=pad, dilation=dilation), nn.ReLU())


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS)


class _Inception(nn.Module):
    """Four branches concatenated on channels: 1×1 (a); 1×1→3×3 (b); 1×1→3×3 dil 2 (c); 1×1→3×3 dil 3 (d)."""

    def __init__(self, in_c: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()
        self.branch1 = _conv_relu(in_c, a, 1)
        self.branch2 = nn.Sequential(_conv_relu(in_c, b, 1), _conv_relu(b, b, 3))
        self.branch3 = nn.Sequential(_conv_relu(in_c, c, 1), _conv_relu(c, c, 3, dilation=2))
        self.branch4 = nn.Sequential(_conv_relu(in_c, d, 1), _conv_relu(d, d, 3, dilation=3))
        self.out_channels = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)

    def keras_convs(self) -> list[nn.Conv2d]:
        """The convs in the file's ``layer_names`` order: the three 1×1 reductions, branch 1, the three 3×3."""
        reductions = [self.branch2[0][0], self.branch3[0][0], self.branch4[0][0]]
        return [*reductions, self.branch1[0], self.branch2[1][0], self.branch3[1][0], self.branch4[1][0]]


class MesoNet(nn.Module):
    """Meso4 or MesoInception4: 4 blocks → flatten → dropout → dense 16 + act → dropout → dense 1 (the logit)."""

    def __init__(self, blocks: nn.Sequential, embed_activation: nn.Module) -> None:
        super().__init__()
        self.blocks = blocks
        self.drop1 = nn.Dropout(_DROPOUT_P)
        self.embed = nn.Sequential(nn.Linear(_FEATURE_C * _FEATURE_HW * _FEATURE_HW, _EMBED_DIM), embed_activation)
        self.drop2 = nn.Dropout(_DROPOUT_P)
        self.logit = nn.Linear(_EMBED_DIM, 1)

    # Properties, not attributes: a module attribute would register the layer twice in the state dict.
    @property
    def cam_target(self) -> nn.Module:
        """Grad-CAM target: block 4's conv+ReLU, output N×16×32×32, the last activation map before the last pool.

        After the ReLU, not the BN: the maps are non-negative rectified features as Grad-CAM assumes, while
        BN's per-channel shift would add a spatially flat offset to each map's share of the CAM. Its own
        parameters are exactly the conv's, so "freeze everything but the target block" keeps a graph here.
        """
        return self.blocks[3][0]

    @property
    def embedding_layer(self) -> nn.Module:
        """Dense-16 and its activation: forward output N×16, a per-face feature vector."""
        return self.embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×256×256 float32 RGB in [0, 1] → N×1 logits; sigmoid(logit) = P(real), sigmoid(-logit) = P(fake)."""
        if x.ndim != 4 or x.shape[1:] != (3, MESONET_INPUT_PX, MESONET_INPUT_PX):
            raise ValueError(f"MesoNet expects N×3×{MESONET_INPUT_PX}×{MESONET_INPUT_PX}, got {tuple(x.shape)}")
        features = self.blocks(x)  # NCHW; the first dense kernel was permuted to match (see module doc)
        return self.logit(self.drop2(self.embed(self.drop1(torch.flatten(features, 1)))))

    def keras_layers(self) -> list[nn.Module]:
        """Our weighted layers (Conv2d, BatchNorm2d, Linear) in the order of the file's ``layer_names``."""
        raise NotImplementedError


class Meso4(MesoNet):
    """Meso-4: conv 8@3×3, 8@5×5, 16@5×5, 16@5×5, each ReLU → BN → max-pool 2, 2, 2, 4; dense 16 → dense 1.

    Dense-16 is followed by LeakyReLU(0.1) although the published Meso-4 files list no layer for it
    (``dense_3, dropout_4, dense_4``, unlike MesoInception's ``leaky_re_lu_1``): the parity values
    decide it (module docstring).
    """

    def __init__(self) -> None:
        blocks = nn.Sequential(
            nn.Sequential(_conv_relu(3, 8, 3), _bn(8), nn.MaxPool2d(2)),
            nn.Sequential(_conv_relu(8, 8, 5), _bn(8), nn.MaxPool2d(2)),
            nn.Sequential(_conv_relu(8, 16, 5), _bn(16), nn.MaxPool2d(2)),
            nn.Sequential(_conv_relu(16, 16, 5), _bn(16), nn.MaxPool2d(4)),
        )
        super().__init__(blocks, nn.LeakyReLU(0.1))

    def keras_layers(self) -> list[nn.Module]:
        return [m for block in self.blocks for m in (block[0][0], block[1])] + [self.embed[0], self.logit]


class MesoInception4(MesoNet):
    """MesoInception-4: inception(1, 4, 4, 2) and inception(2, 4, 4, 2) blocks, then Meso-4's blocks 3-4.

    Each block: features → BN → max-pool (2, 2, 2, 4); dense 16 → LeakyReLU(0.1) → dense 1.
    """

    def __init__(self) -> None:
        inc1 = _Inception(3, 1, 4, 4, 2)
        inc2 = _Inception(inc1.out_channels, 2, 4, 4, 2)
        blocks = nn.Sequential(
            nn.Sequential(inc1, _bn(inc1.out_channels), nn.MaxPool2d(2)),
            nn.Sequential(inc2, _bn(inc2.out_channels), nn.MaxPool2d(2)),
            nn.Sequential(_conv_relu(inc2.out_channels, 16, 5), _bn(16), nn.MaxPool2d(2)),
            nn.Sequential(_conv_relu(16, 16, 5), _bn(16), nn.MaxPool2d(4)),
        )
        super().__init__(blocks, nn.LeakyReLU(0.1))

    def keras_layers(self) -> list[nn.Module]:
        inc1, inc2 = self.blocks[0][0], self.blocks[1][0]
        assert isinstance(inc1, _Inception) and isinstance(inc2, _Inception)
        return [
            *inc1.keras_convs(),
            self.blocks[0][1],
            *inc2.keras_convs(),
            self.blocks[1][1],
            *(m for block in self.blocks[2:] for m in (block[0][0], block[1])),
            self.embed[0],
            self.logit,
        ]


# --- reading the .h5 files ------------------------------------------------------------------------------

Signature = dict[str, tuple[int, ...]]  # Keras weight name ("kernel", "gamma", ...) → shape


def _keras_signature(layer: nn.Module) -> Signature:
    """The weight names and shapes Keras stores for one of our layers."""
    if isinstance(layer, nn.Conv2d):
        out_c, in_c, kh, kw = layer.weight.shape
        return {"kernel": (kh, kw, in_c, out_c), "bias": (out_c,)}
    if isinstance(layer, nn.BatchNorm2d):
        c = (layer.num_features,)
        return {"gamma": c, "beta": c, "moving_mean": c, "moving_variance": c}
    if isinstance(layer, nn.Linear):
        return {"kernel": (layer.in_features, layer.out_features), "bias": (layer.out_features,)}
    raise TypeError(f"no Keras weights for {type(layer).__name__}")


def is_hdf5(path: Path) -> bool:
    """True when the file starts with the 8-byte HDF5 signature (files with a user block are not handled)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _weight_key(name: str) -> str:
    """``"conv2d_5/kernel:0"`` → ``"kernel"``."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


Layers = Sequence[tuple[str, dict[str, h5py.Dataset | np.ndarray]]]  # (layer name, {weight key: values})


def _weighted_layers(root: h5py.Group) -> list[tuple[str, dict[str, h5py.Dataset]]]:
    """Every layer that has weights, in ``layer_names`` order; datasets not read yet (shapes come first)."""
    layers = []
    for raw in root.attrs["layer_names"]:
        name = _text(raw)
        group = root[name]
        weights = {_weight_key(_text(w)): group[_text(w)] for w in group.attrs.get("weight_names", [])}
        if weights:
            layers.append((name, weights))
    return layers


def _describe(layers: Layers, limit: int = 12) -> str:
    """``[conv2d_5 (3, 3, 3, 8), batch_normalization_5 (8,), ...]``: each layer's first weight's shape."""
    shown = [f"{name} {tuple(next(iter(w.values())).shape)}" for name, w in layers[:limit]]
    more = f", ... ({len(layers) - limit} more)" if len(layers) > limit else ""
    return "[" + ", ".join(shown) + more + "]"


def _matches(layers: Layers, ours: Sequence[nn.Module]) -> bool:
    if len(layers) != len(ours):
        return False
    return all(
        {k: tuple(v.shape) for k, v in weights.items()} == _keras_signature(layer)
        for (_, weights), layer in zip(layers, ours, strict=True)
    )


def _dense_rows_chw(kernel: np.ndarray) -> np.ndarray:
    """The first dense kernel, rows reordered from Keras' (H, W, C) flatten to torch's (C, H, W)."""
    hwc = kernel.reshape(_FEATURE_HW, _FEATURE_HW, _FEATURE_C, -1)
    return hwc.transpose(2, 0, 1, 3).reshape(kernel.shape)


def _load(model: MesoNet, layers: Sequence[tuple[str, dict[str, np.ndarray]]]) -> None:
    """Copy the file's arrays into ``model``: conv HWIO → OIHW, dense in×out → out×in, BN as is."""

    def put(param: torch.Tensor, value: np.ndarray) -> None:
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if tensor.shape != param.shape:  # unreachable after _matches; a guard against layout slips here
            raise CheckpointError(f"shape {tuple(tensor.shape)} does not fit {tuple(param.shape)}")
        param.copy_(tensor)

    with torch.no_grad():
        for (_, w), layer in zip(layers, model.keras_layers(), strict=True):
            if isinstance(layer, nn.Conv2d):
                put(layer.weight, w["kernel"].transpose(3, 2, 0, 1))  # HWIO → OIHW
                put(layer.bias, w["bias"])
            elif isinstance(layer, nn.BatchNorm2d):
                put(layer.weight, w["gamma"])
                put(layer.bias, w["beta"])
                put(layer.running_mean, w["moving_mean"])
                put(layer.running_var, w["moving_variance"])
            else:
                kernel = _dense_rows_chw(w["kernel"]) if layer is model.embed[0] else w["kernel"]
                put(layer.weight, kernel.T)  # in×out → out×in
                put(layer.bias, w["bias"])


def _non_finite(layers: Sequence[tuple[str, dict[str, np.ndarray]]]) -> Iterator[str]:
    for name, weights in layers:
        for key, value in weights.items():
            if not np.isfinite(value).all():
                yield f"{name}/{key}"


def read_mesonet_h5(path: Path) -> MesoNet:
    """A Meso4 or MesoInception4 with the weights of a Keras ``.h5`` file, in eval mode on CPU.

    Reads both the plain ``save_weights`` layout (root attribute ``layer_names``; the published files)
    and a full ``model.save`` (the same under ``model_weights``). Raises ``CheckpointError`` for anything
    else, saying what was found; ``NoModel`` when there is no file.
    """
    path = Path(path)
    if not path.is_file():
        raise NoModel(f"no MesoNet weights file at {path}")
    if not is_hdf5(path):
        with open(path, "rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
        raise CheckpointError(f"{path.name} is not an HDF5 file (it starts with {head!r}, not {HDF5_SIGNATURE!r})")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if isinstance(f.get("model_weights"), h5py.Group) else f
            if "layer_names" not in root.attrs:
                raise CheckpointError(
                    f"{path.name} is an HDF5 file with no Keras 'layer_names' attribute "
                    f"(top-level keys: {sorted(f.keys())[:12]}), not a Keras weights file"
                )
            found = _weighted_layers(root)
            model = next((m for m in (Meso4(), MesoInception4()) if _matches(found, m.keras_layers())), None)
            if model is None:
                raise CheckpointError(
                    f"{path.name} is an HDF5 file whose weighted layers are {_describe(found)}, "
                    "not MesoNet's Meso4 or MesoInception4"
                )
            # Values are read only once the shapes match: an odd file cannot make us read much.
            layers = [(name, {k: np.asarray(d, dtype=np.float32) for k, d in w.items()}) for name, w in found]
    except CheckpointError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError/TypeError/... for truncated or odd files
        raise CheckpointError(
            f"{path.name} is a truncated or damaged HDF5 file, or not laid out as Keras weights: "
            f"{type(err).__name__}: {err}"
        ) from None
    bad = list(_non_finite(layers))
    if bad:
        raise CheckpointError(f"{path.name}: non-finite values in {bad[:6]}")
    _load(model, layers)
    return model.eval()
