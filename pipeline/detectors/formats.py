"""A checkpoint file -> the detector it holds: recognised from its bytes (HDF5 = MesoNet's Keras weights;
a torch file = SBI's release, ours with ``detector``, or the seed's InceptionResnetV1), read (torch files
only with ``weights_only=True``), checked key by key and shape by shape against the registry's module.
``pipeline.models`` finds, loads (cards, device) and saves; this module only turns bytes into weights
(the formats themselves are listed in pipeline/models.py's docstring).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import torch

from pipeline.detectors.registry import SEED, SEED_PROFILE, DetectorSpec, detector, known_formats
from pipeline.errors import CheckpointError
from pipeline.types import PreprocessProfile

_STATE_KEYS = ("model_state_dict", "state_dict")
_SHOW = 5  # how many offending keys an error message lists


def read_torch(path: Path) -> Any:
    with path.open("rb") as f:
        head = f.read(8)
    # torch.save writes a zip archive (PK..) or, in the legacy format, a pickle (protocol 2+: 0x80)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise CheckpointError(
            f"{path.name} is not a readable torch checkpoint (nor an HDF5 file): it starts with {head!r}. "
            f"Formats known: {known_formats()}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower():
            raise CheckpointError(
                f"{path.name}: the checkpoint holds Python objects beyond tensors and plain types; "
                "this program refuses to load arbitrary pickled objects (they can run code). "
                "Re-save it as a state dict: torch.save({'model_state_dict': model.state_dict()}, path)"
            ) from None
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint: {err}") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/ValueError/... for non-torch bytes
        raise CheckpointError(
            f"{path.name} is not a readable torch checkpoint (truncated or not a torch file): "
            f"{type(err).__name__}: {err}"
        ) from None


def is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def state_dict_of(obj: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if key in obj and is_state_dict(obj[key]):
                sd = obj[key]
                break
        else:
            if not is_state_dict(obj):
                keys = sorted(map(str, obj))[:10]
                raise CheckpointError(
                    f"{name}: expected a state dict or a dict with 'model_state_dict', found top-level keys {keys}"
                )
            sd = obj
    else:
        raise CheckpointError(f"{name}: expected a dict of tensors, found a {type(obj).__name__}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def check_fits(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], name: str, spec: DetectorSpec | None = None
) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k} {tuple(sd[k].shape)} (model wants {tuple(v.shape)})"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes: {', '.join(wrong[:_SHOW])}")
    if missing:
        problems.append(f"{len(missing)} missing keys: {', '.join(missing[:_SHOW])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {', '.join(unexpected[:_SHOW])}")
    if problems:
        what = (spec or detector(SEED)).architecture
        raise CheckpointError(f"{name} does not fit {what}: " + "; ".join(problems))


def profile_of(obj: Any, name: str, default: PreprocessProfile = SEED_PROFILE) -> PreprocessProfile:
    raw = obj.get("preprocess") if isinstance(obj, dict) else None
    if raw is None:
        return default
    fields = {f.name for f in dataclasses.fields(PreprocessProfile)}
    if not isinstance(raw, dict) or set(raw) - fields:
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{name}: 'preprocess' must be a dict of {sorted(fields)}, got {got}")
    try:
        values = dict(raw)
        for key in ("mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(float(x) for x in values[key])
                if len(values[key]) != 3:
                    raise ValueError(f"{key} needs 3 numbers")
        profile = PreprocessProfile(**values)
        ok = (
            profile.crop_px > 0
            and profile.margin_px >= 0
            and profile.margin_px < profile.crop_px
            and profile.input_px > 0
            and profile.resize in ("bilinear", "bicubic")
            and profile.scale > 0
        )
        if not ok:
            raise ValueError(f"out of range: {profile}")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name}: invalid 'preprocess' entry: {err}") from None
    return profile


def read_detector(path: Path) -> tuple[torch.nn.Module, DetectorSpec, PreprocessProfile]:
    """The module (weights loaded, CPU), its spec and the profile it expects, recognised from the bytes."""
    from pipeline.detectors.mesonet import is_hdf5

    if is_hdf5(path):
        from pipeline.detectors.mesonet import MesoInception4, read_mesonet_h5

        module = read_mesonet_h5(path)
        spec = detector("mesoinception4" if isinstance(module, MesoInception4) else "mesonet4")
        return module, spec, spec.profile
    obj = read_torch(path)
    from pipeline.detectors.sbi import looks_like_sbi, read_sbi

    if looks_like_sbi(obj):
        spec = detector("sbi-effb4")
        return read_sbi(obj, path.name), spec, spec.profile
    name = obj.get("detector", SEED) if isinstance(obj, dict) else SEED
    if not isinstance(name, str):
        raise CheckpointError(f"{path.name}: 'detector' must be a detector's name, found a {type(name).__name__}")
    spec = detector(name)
    module = spec.build()
    try:
        sd = state_dict_of(obj, path.name)
        check_fits(module, sd, path.name, spec)
    except CheckpointError as err:
        raise CheckpointError(f"{err}. Formats known: {known_formats()}") from None
    module.load_state_dict(sd, strict=True)
    return module, spec, profile_of(obj, path.name, spec.profile)
