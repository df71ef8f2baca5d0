"""Where and in what precision the models run: chosen once per process from Settings (``device``,
``precision``), never hard-coded. The only module that asks torch what hardware there is."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other torch device string as given.

    The only place the project chooses a device. Raises ConfigError for an unknown string.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"device {name!r} is not a torch device (try 'auto', 'cpu', 'cuda:0'): {err}") from None


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """The classifier trunk's dtype for ``device`` (Settings.precision); chosen once, with the device.

    ``"auto"``: bf16 where the hardware computes it natively (a CPU with AVX512-BF16/AMX, an Ampere+
    GPU), fp16 on older GPUs, fp32 otherwise; bf16 emulated in software is slower than fp32.
    Raises ConfigError for fp16 on a CPU (no fast fp16 convolutions there).
    """
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if device.type == "cpu":
            raise ConfigError("precision 'fp16' needs a GPU; on a CPU use 'bf16' or 'fp32'")
        return torch.float16
    if name != "auto":
        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_native_bf16() -> bool:
    # torch exposes this only as a private op; a torch without it gets the safe answer (fp32)
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
