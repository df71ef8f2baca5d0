"""MesoNet ``.h5`` files made here with random weights, in the published files' exact layout, and a pure-numpy
forward pass of the Keras models straight from those arrays: the reference that proves the loader.

Layout (Keras 2.1.5 ``save_weights``, as in DariusAf/MesoNet's weights/*.h5): root attributes ``backend``,
``keras_version`` and ``layer_names`` (every layer, weighted or not, in model order); one group per layer
with attribute ``weight_names`` (``b"conv2d_5/kernel:0"``, ...; an empty float64 array for layers without
weights) and the datasets under ``<layer>/<layer>/<weight>:0``. ``full_model=True`` writes the same under a
``model_weights`` group, as ``model.save`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

Weights = dict[str, dict[str, np.ndarray]]  # layer name → {"kernel": ..., "bias": ...}

# Meso4_DF.h5's layer names; the trailing numbers are Keras' per-session counters.
MESO4_LAYER_NAMES = (
    "input_2 conv2d_5 batch_normalization_5 max_pooling2d_5 conv2d_6 batch_normalization_6 max_pooling2d_6 "
    "conv2d_7 batch_normalization_7 max_pooling2d_7 conv2d_8 batch_normalization_8 max_pooling2d_8 "
    "flatten_2 dropout_3 dense_3 dropout_4 dense_4"
).split()
# MesoInception_DF.h5's: an inception's 1×1 reductions come first, then branch 1, then the three 3×3.
INCEPTION_LAYER_NAMES = (
    "input_1 conv2d_2 conv2d_4 conv2d_6 conv2d_1 conv2d_3 conv2d_5 conv2d_7 concatenate_1 "
    "batch_normalization_1 max_pooling2d_1 conv2d_9 conv2d_11 conv2d_13 conv2d_8 conv2d_10 conv2d_12 "
    "conv2d_14 concatenate_2 batch_normalization_2 max_pooling2d_2 conv2d_15 batch_normalization_3 "
    "max_pooling2d_3 conv2d_16 batch_normalization_4 max_pooling2d_4 flatten_1 dropout_1 dense_1 "
    "leaky_re_lu_1 dropout_2 dense_2"
).split()

# Keras shapes: conv kernels HWIO, dense kernels in×out.
MESO4_SHAPES = {
    "conv2d_5": (3, 3, 3, 8),
    "conv2d_6": (5, 5, 8, 8),
    "conv2d_7": (5, 5, 8, 16),
    "conv2d_8": (5, 5, 16, 16),
    "batch_normalization_5": (8,),
    "batch_normalization_6": (8,),
    "batch_normalization_7": (16,),
    "batch_normalization_8": (16,),
    "dense_3": (1024, 16),
    "dense_4": (16, 1),
}


def _inception_shapes(first: int, in_c: int, widths: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """conv2d_<first..first+6> in creation order: branch 1 (1×1), then (1×1, 3×3) for branches 2, 3, 4."""
    a, b, c, d = widths
    shapes = [(1, 1, in_c, a), (1, 1, in_c, b), (3, 3, b, b), (1, 1, in_c, c), (3, 3, c, c), (1, 1, in_c, d)]
    shapes.append((3, 3, d, d))
    return {f"conv2d_{first + i}": s for i, s in enumerate(shapes)}


INCEPTION_SHAPES = {
    **_inception_shapes(1, 3, (1, 4, 4, 2)),
    **_inception_shapes(8, 11, (2, 4, 4, 2)),
    "conv2d_15": (5, 5, 12, 16),
    "conv2d_16": (5, 5, 16, 16),
    "batch_normalization_1": (11,),
    "batch_normalization_2": (12,),
    "batch_normalization_3": (16,),
    "batch_normalization_4": (16,),
    "dense_1": (1024, 16),
    "dense_2": (16, 1),
}
ARCHS = {"meso4": (MESO4_LAYER_NAMES, MESO4_SHAPES), "inception": (INCEPTION_LAYER_NAMES, INCEPTION_SHAPES)}


def random_weights(arch: str, rng: np.random.Generator) -> Weights:
    """He-scaled kernels and plausible BN statistics, so activations neither die nor explode over 4 blocks."""
    weights: Weights = {}
    for name, shape in ARCHS[arch][1].items():
        if name.startswith("batch_normalization"):
            weights[name] = {
                "gamma": rng.uniform(0.5, 1.5, shape),
                "beta": rng.normal(0.0, 0.2, shape),
                "moving_mean": rng.uniform(0.0, 0.5, shape),
                "moving_variance": rng.uniform(0.5, 2.0, shape),
            }
        else:
            fan_in = int(np.prod(shape[:-1]))
            weights[name] = {
                "kernel": rng.normal(0.0, np.sqrt(2.0 / fan_in), shape),
                "bias": rng.normal(0.0, 0.1, shape[-1:]),
            }
    return {n: {k: v.astype(np.float32) for k, v in w.items()} for n, w in weights.items()}


def write_keras_h5(path: Path, layer_names: Sequence[str], weights: Weights, full_model: bool = False) -> Path:
    """Write ``weights`` in Keras 2.1.5's HDF5 layout; layers absent from ``weights`` get no weights."""
    with h5py.File(path, "w") as f:
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
        root = f.create_group("model_weights") if full_model else f
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.1.5"
        root.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
        for name in layer_names:
            group = root.create_group(name)
            layer = weights.get(name, {})
            # Keras' own order: kernel, bias / gamma, beta, moving_mean, moving_variance.
            names = [f"{name}/{key}:0" for key in layer]
            group.attrs["weight_names"] = np.array([n.encode() for n in names]) if names else np.array([])
            for weight_name, value in zip(names, layer.values(), strict=True):
                group.create_dataset(weight_name, data=value)
    return path


def write_mesonet_h5(path: Path, arch: str, seed: int = 0, full_model: bool = False) -> Weights:
    """A random-weight MesoNet file (``arch`` = "meso4" or "inception") at ``path``; returns its weights."""
    weights = random_weights(arch, np.random.default_rng(seed))
    write_keras_h5(path, ARCHS[arch][0], weights, full_model)
    return weights


# --- the reference: Keras semantics in numpy, channels-last, float64 -------------------------------------------


def conv_same(x: np.ndarray, layer: dict[str, np.ndarray], dilation: int = 1) -> np.ndarray:
    """Conv2D(padding="same", stride 1) + ReLU: x N×H×W×C, kernel kh×kw×C×O → N×H×W×O."""
    kernel, bias = layer["kernel"].astype(np.float64), layer["bias"].astype(np.float64)
    kh, kw = kernel.shape[:2]
    # TensorFlow's "same": total padding dilation·(k-1), the smaller half before.
    th, tw = dilation * (kh - 1), dilation * (kw - 1)
    xp = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + w, :] @ kernel[i, j]
    return np.maximum(out + bias, 0.0)


def batch_norm(x: np.ndarray, layer: dict[str, np.ndarray]) -> np.ndarray:
    """Keras BatchNormalization at inference, epsilon 1e-3, over the last axis."""
    scale = layer["gamma"] / np.sqrt(layer["moving_variance"].astype(np.float64) + 1e-3)
    return (x - layer["moving_mean"]) * scale + layer["beta"]


def max_pool_same(x: np.ndarray, size: int) -> np.ndarray:
    """MaxPooling2D(size, strides=size, padding="same"): N×H×W×C → N×⌈H/size⌉×⌈W/size⌉×C."""
    n, h, w, c = x.shape
    oh, ow = -(-h // size), -(-w // size)
    ph, pw = oh * size - h, ow * size - w
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=-np.inf)
    return xp.reshape(n, oh, size, ow, size, c).max(axis=(2, 4))


def _inception(x: np.ndarray, w: Weights, first: int) -> np.ndarray:
    c = [w[f"conv2d_{first + i}"] for i in range(7)]
    branches = [
        conv_same(x, c[0]),
        conv_same(conv_same(x, c[1]), c[2]),
        conv_same(conv_same(x, c[3]), c[4], dilation=2),
        conv_same(conv_same(x, c[5]), c[6], dilation=3),
    ]
    return np.concatenate(branches, axis=-1)


def keras_logits(arch: str, w: Weights, images: np.ndarray) -> np.ndarray:
    """The Keras model's pre-sigmoid output, N×1 float64, for N×256×256×3 images in [0, 1] (channels-last)."""
    x = images.astype(np.float64)
    if arch == "meso4":
        for i, pool in zip(range(5, 9), (2, 2, 2, 4), strict=True):
            x = max_pool_same(batch_norm(conv_same(x, w[f"conv2d_{i}"]), w[f"batch_normalization_{i}"]), pool)
        dense_a, dense_b = w["dense_3"], w["dense_4"]
    else:
        x = max_pool_same(batch_norm(_inception(x, w, 1), w["batch_normalization_1"]), 2)
        x = max_pool_same(batch_norm(_inception(x, w, 8), w["batch_normalization_2"]), 2)
        x = max_pool_same(batch_norm(conv_same(x, w["conv2d_15"]), w["batch_normalization_3"]), 2)
        x = max_pool_same(batch_norm(conv_same(x, w["conv2d_16"]), w["batch_normalization_4"]), 4)
        dense_a, dense_b = w["dense_1"], w["dense_2"]
    flat = x.reshape(len(x), -1)  # Keras' Flatten: channels-last (H, W, C) order
    hidden = flat @ dense_a["kernel"] + dense_a["bias"]
    hidden = np.where(hidden > 0, hidden, 0.1 * hidden)  # LeakyReLU(0.1); dropout is off at inference
    return hidden @ dense_b["kernel"] + dense_b["bias"]


def two_detectors(root: Path, seed: int) -> tuple[Path, Path]:
    """An ensemble's two members with random weights: a seed-format InceptionResnetV1 (``seed.pth``, 160-px
    crops, sigmoid P(fake)) and a MesoNet ``Meso4_random.h5`` (256-px bicubic crops, sigmoid P(real)):
    different profiles, output kinds and embeddings."""
    import torch

    from pipeline.models import build_model, save_checkpoint

    torch.manual_seed(seed)
    first = save_checkpoint(build_model(), root / "seed.pth")
    second = root / "Meso4_random.h5"
    write_mesonet_h5(second, "meso4", seed=seed + 1)
    return first, second
