"""Checkpoints: finding, loading (the project's only ``torch.load``) and saving. Never downloads.

The classifier is facenet-pytorch's ``InceptionResnetV1(classify=True, num_classes=1)``: one logit,
``fake_prob = sigmoid(logit)``. Accepted checkpoint layouts (all read with ``weights_only=True``):

- ``{"model_state_dict": sd, ...}`` — the community seed ``resnetinceptionv1_epoch_32.pth`` and ours;
  ours add ``"preprocess": {PreprocessProfile fields}`` (plain types, so ``weights_only`` reads it);
- a bare state dict (``{"conv2d_1a.conv.weight": tensor, ...}``);
- either of the above with ``module.``-prefixed keys (saved from ``DataParallel``).
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from facenet_pytorch import InceptionResnetV1

from pipeline.errors import CheckpointError, ConfigError, NoModel
from pipeline.sample import file_sha256  # re-exported: pipeline.models.file_sha256 is used too
from pipeline.types import ModelInfo, PreprocessProfile

# The seed recipe: MTCNN(post_process=False) 160-px face (0..255) -> bilinear 256 px -> /255.
SEED_PROFILE = PreprocessProfile(
    name="seed-v1",
    crop_px=160,
    margin_px=0,
    input_px=256,
    resize="bilinear",
    scale=1 / 255,
    mean=None,
    std=None,
)
SEED_CHECKPOINT_NAME = "resnetinceptionv1_epoch_32.pth"
CHECKPOINT_SUFFIXES = (".pth", ".pt")
_STATE_KEYS = ("model_state_dict", "state_dict")
_SHOW = 5  # how many offending keys an error message lists


@dataclass(frozen=True)
class LoadedModel:
    """``module``: InceptionResnetV1 in eval mode on ``info.device``; ``info``: what was loaded."""

    module: torch.nn.Module
    info: ModelInfo


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


def _how_to_get_one(models_dir: Path) -> str:
    return (
        "to get one: pass --checkpoint PATH, or set DFF_CHECKPOINT=PATH, or put "
        f"{SEED_CHECKPOINT_NAME} (the community seed checkpoint) into {models_dir}, "
        "or train one with `dff train`"
    )


def find_checkpoint(explicit: Path | None, models_dir: Path) -> Path:
    """The explicit path when given (it must exist), else the newest ``*.pth``/``*.pt`` in ``models_dir``.

    Raises NoModel with instructions when there is none.
    """
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise NoModel(f"checkpoint {explicit} does not exist; {_how_to_get_one(models_dir)}")
        return explicit
    models_dir = Path(models_dir).expanduser()
    found = (
        [p for p in models_dir.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
        if models_dir.is_dir()
        else []
    )
    if not found:
        raise NoModel(f"no checkpoint (*.pth, *.pt) in {models_dir}; {_how_to_get_one(models_dir)}")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def build_model() -> InceptionResnetV1:
    """A randomly initialised InceptionResnetV1 with a single logit (never downloads weights)."""
    return InceptionResnetV1(pretrained=None, classify=True, num_classes=1)


def _untrained_model() -> InceptionResnetV1:
    # fork_rng: a fixed seed for repeatable demos without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model()


def _read(path: Path) -> Any:
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


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _state_dict_of(obj: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                sd = obj[key]
                break
        else:
            if not _is_state_dict(obj):
                keys = sorted(map(str, obj))[:10]
                raise CheckpointError(
                    f"{name}: expected a state dict or a dict with 'model_state_dict', "
                    f"found top-level keys {keys}"
                )
            sd = obj
    else:
        raise CheckpointError(f"{name}: expected a dict of tensors, found a {type(obj).__name__}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _check_fits(model: torch.nn.Module, sd: dict[str, torch.Tensor], name: str) -> None:
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
        raise CheckpointError(
            f"{name} does not fit InceptionResnetV1(classify=True, num_classes=1): " + "; ".join(problems)
        )


def _profile_of(obj: Any, name: str) -> PreprocessProfile:
    raw = obj.get("preprocess") if isinstance(obj, dict) else None
    if raw is None:
        return SEED_PROFILE
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
            profile.crop_px > 0 and profile.margin_px >= 0 and profile.margin_px < profile.crop_px
            and profile.input_px > 0 and profile.resize == "bilinear" and profile.scale > 0
        )
        if not ok:
            raise ValueError(f"out of range: {profile}")
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name}: invalid 'preprocess' entry: {err}") from None
    return profile


def load_model(path: Path | None, device: torch.device, *, allow_untrained: bool = False) -> LoadedModel:
    """Load a checkpoint onto ``device`` in eval mode.

    ``path=None`` gives random weights (seeded, ``info.untrained=True``) only with ``allow_untrained``;
    otherwise NoModel. A missing file is NoModel (there is no model to load); a file that exists but
    cannot be used (not torch, truncated, pickled objects, wrong layout or shapes) is CheckpointError.
    """
    if path is None:
        if not allow_untrained:
            raise NoModel("no checkpoint given; pass --checkpoint PATH or set DFF_CHECKPOINT=PATH")
        model = _untrained_model()
        info = ModelInfo("UNTRAINED", "untrained", SEED_PROFILE, str(device), untrained=True)
        return LoadedModel(model.to(device).eval(), info)
    path = Path(path).expanduser()
    if not path.exists():
        raise NoModel(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    obj = _read(path)
    sd = _state_dict_of(obj, path.name)
    profile = _profile_of(obj, path.name)
    model = build_model()
    _check_fits(model, sd, path.name)
    model.load_state_dict(sd, strict=True)
    info = ModelInfo(path.name, file_sha256(path), profile, str(device), untrained=False)
    return LoadedModel(model.to(device).eval(), info)


def save_checkpoint(
    module: torch.nn.Module, path: Path, profile: PreprocessProfile = SEED_PROFILE, **extra: Any
) -> Path:
    """Write ``{"model_state_dict", "preprocess", **extra}`` (seed-compatible; ``load_model`` reads it).

    ``extra`` values must be plain types (numbers, strings, lists, dicts, tensors) for ``weights_only``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    preprocess = dataclasses.asdict(profile)
    for key in ("mean", "std"):
        if preprocess[key] is not None:
            preprocess[key] = list(preprocess[key])
    torch.save({"model_state_dict": state, "preprocess": preprocess, **extra}, path)
    return path
