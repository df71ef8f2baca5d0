"""Checkpoints: finding, loading and saving. Never downloads.

Which detector (pipeline/detectors/registry.py) a file holds is recognised from its bytes, whatever its
name, by pipeline/detectors/formats.py (the project's only ``torch.load``): an HDF5 file is MesoNet's
Keras weights (Meso-4 or MesoInception-4, from its layers); a torch file is read with
``weights_only=True`` and is, in this order:

- SBI's release (``{"model": {"net.…": tensor}}``, EfficientNet-B4);
- ours: ``{"model_state_dict": sd, "preprocess": {PreprocessProfile fields}, "detector": name}`` (plain
  types, so ``weights_only`` reads it; ``detector`` absent = ``seed-irv1``);
- the seed's InceptionResnetV1(classify=True, num_classes=1): ``{"model_state_dict": sd, ...}`` (the
  community ``resnetinceptionv1_epoch_32.pth``) or a bare state dict, either with ``module.``-prefixed keys
  (saved from ``DataParallel``) or not.

Anything else is a CheckpointError naming what was found and the formats known.

A model card ``<checkpoint>.card.json`` beside the file (written by ``dff train``/``dff eval``) is read when
its ``sha256`` matches the file: its name, one-line metrics summary and calibration go into ``ModelInfo``,
and its temperature is folded into the logit layer, so every consumer of ``fake_prob`` gets calibrated
probabilities without knowing about cards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from facenet_pytorch import InceptionResnetV1

from pipeline.detectors.formats import check_fits, profile_of, read_detector, read_torch, state_dict_of
from pipeline.detectors.registry import SEED, SEED_PROFILE, DetectorSpec
from pipeline.errors import CheckpointError, NoModel
from pipeline.sources.probe import file_sha256  # re-exported: pipeline.models.file_sha256 is used too
from pipeline.types import ModelInfo, PreprocessProfile

# facenet-pytorch's own recipe (fixed_image_standardization): for a VGGFace2/CASIA backbone file.
FACENET_PROFILE = PreprocessProfile(
    name="facenet-160",
    crop_px=160,
    margin_px=0,
    input_px=160,
    resize="bilinear",
    scale=1 / 255,
    mean=(0.5, 0.5, 0.5),
    std=(128 / 255, 128 / 255, 128 / 255),
)
SEED_CHECKPOINT_NAME = "resnetinceptionv1_epoch_32.pth"
CARD_SUFFIX = ".card.json"
CARD_SCHEMA = "dff.card/1"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".h5")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """``module``: the detector (``info.detector``) in eval mode on ``info.device``; ``info``: what was loaded."""

    module: torch.nn.Module
    info: ModelInfo


def _how_to_get_one(models_dir: Path) -> str:
    """The ways to a model, the one-command download first (pipeline/detectors/catalog.py; never run here)."""
    from pipeline.detectors.catalog import get_command

    return (
        f"to get one: run {get_command(models_dir=models_dir)}, or pass --checkpoint PATH, or set "
        f"DFF_CHECKPOINT=PATH, or put {SEED_CHECKPOINT_NAME} (the community seed checkpoint) into {models_dir}, "
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
        raise NoModel(f"no checkpoint (*.pth, *.pt, *.h5) in {models_dir}; {_how_to_get_one(models_dir)}")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def build_model() -> InceptionResnetV1:
    """A randomly initialised InceptionResnetV1 with a single logit (never downloads weights)."""
    return InceptionResnetV1(pretrained=None, classify=True, num_classes=1)


def _untrained_model() -> InceptionResnetV1:
    # fork_rng: a fixed seed for repeatable demos without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model()


def card_path(checkpoint: Path) -> Path:
    """Where a checkpoint's model card lives: ``<checkpoint>.card.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CARD_SUFFIX)


@dataclass(frozen=True)
class CardFacts:
    """What the service takes from a model card. ``threshold`` is a P(fake) in (0, 1) or None."""

    name: str
    summary: str | None
    temperature: float
    threshold: float | None


def read_card(checkpoint: Path) -> dict[str, Any] | None:
    """The card beside ``checkpoint`` as a dict, or None when there is none. ValueError if it is not JSON."""
    path = card_path(checkpoint)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        raise ValueError(f"{path} is not a {CARD_SCHEMA} model card")
    return card


def read_card_facts(checkpoint: Path, sha256: str) -> CardFacts | None:
    """The card beside ``checkpoint`` when it describes these weights (same ``sha256``), else None.

    A card that is missing, unreadable or stale (written for other weights) is ignored, with a warning for
    the last two: a wrong temperature would silently distort every probability.
    """
    path = card_path(checkpoint)
    try:
        card = read_card(checkpoint)
        if card is None:
            return None
        if card.get("sha256") != sha256:
            log.warning("%s describes other weights (sha256 differs); ignoring it", path.name)
            return None
        calibration = card.get("calibration") or {}
        temperature = float(calibration.get("temperature", 1.0))
        threshold = calibration.get("threshold")
        threshold = None if threshold is None else float(threshold)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        summary = card.get("summary")
        return CardFacts(
            name=str(card.get("name") or checkpoint.name),
            summary=str(summary) if summary else None,
            temperature=temperature,
            threshold=threshold,
        )
    except (OSError, ValueError, TypeError) as err:
        log.warning("ignoring unreadable model card %s: %s", path.name, err)
        return None


def _fold_temperature(model: torch.nn.Module, temperature: float, spec: DetectorSpec) -> None:
    """Divide the logit layer by ``temperature``: logit' = logit / T (for two-class softmax both logits,
    so their difference too). Grad-CAM maps are normalised per image, so they do not change; embeddings
    come before this layer and do not change either."""
    layer = spec.logit_layer(model)
    with torch.no_grad():
        layer.weight.div_(temperature)
        if layer.bias is not None:
            layer.bias.div_(temperature)


def load_model(
    path: Path | None, device: torch.device, *, allow_untrained: bool = False, apply_card: bool = True
) -> LoadedModel:
    """Load a checkpoint onto ``device`` in eval mode.

    ``path=None`` gives random weights (seeded, ``info.untrained=True``) only with ``allow_untrained``;
    otherwise NoModel. A missing file is NoModel (there is no model to load); a file that exists but
    cannot be used (not torch, truncated, pickled objects, wrong layout or shapes) is CheckpointError.
    ``apply_card``: read the model card beside the file (name, metrics, calibrated temperature folded into
    the logit); False gives the raw weights (``dff eval`` fits calibration on raw logits).
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
    model, spec, profile = read_detector(path)
    sha256 = file_sha256(path)
    info = ModelInfo(path.name, sha256, profile, str(device), untrained=False, detector=spec.name)
    facts = read_card_facts(path, sha256) if apply_card else None
    if facts is not None:
        if facts.temperature != 1.0:
            _fold_temperature(model, facts.temperature, spec)
        info = dataclasses.replace(
            info,
            card_name=facts.name,
            card_summary=facts.summary,
            temperature=facts.temperature,
            calibrated_threshold=facts.threshold,
        )
    return LoadedModel(model.to(device).eval(), info)


def read_training_state(path: Path) -> dict[str, Any]:
    """Every top-level entry of a dict checkpoint (``model_state_dict``, ``preprocess``, ``epoch``,
    ``optimizer_state_dict``, ...), read with ``weights_only``; for resuming training."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NoModel(f"checkpoint {path} does not exist")
    obj = read_torch(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: expected a dict checkpoint, found a {type(obj).__name__}")
    return obj


def load_for_training(path: Path) -> tuple[InceptionResnetV1, PreprocessProfile]:
    """Weights to start training from, on CPU in train mode, with the profile they expect.

    Accepts what ``load_model`` accepts, plus a facenet-pytorch backbone file (e.g. the VGGFace2 state
    dict, whose ``logits`` layer has thousands of identity classes): every layer but ``logits`` is
    loaded, ``logits`` starts fresh, and the profile is facenet's (``FACENET_PROFILE``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise NoModel(f"checkpoint {path} does not exist")
    obj = read_torch(path)
    sd = state_dict_of(obj, path.name)
    model = build_model()
    expected = model.state_dict()
    head = [k for k in expected if k.startswith("logits.")]
    if any(k not in sd or sd[k].shape != expected[k].shape for k in head):
        # an identity classifier (or none): keep the backbone, start a fresh one-logit head
        sd = {k: v for k, v in sd.items() if not k.startswith("logits.")}
        sd.update({k: expected[k] for k in head})
        profile = profile_of(obj, path.name) if "preprocess" in obj else FACENET_PROFILE
    else:
        profile = profile_of(obj, path.name)
    check_fits(model, sd, path.name)
    model.load_state_dict(sd, strict=True)
    return model.train(), profile


def save_checkpoint(
    module: torch.nn.Module,
    path: Path,
    profile: PreprocessProfile = SEED_PROFILE,
    *,
    detector_name: str = SEED,
    **extra: Any,
) -> Path:
    """Write ``{"model_state_dict", "preprocess", "detector", **extra}`` (seed-compatible: the seed's own
    loaders read ``model_state_dict`` alone; ``load_model`` reads it all, for any detector).

    ``extra`` values must be plain types (numbers, strings, lists, dicts, tensors) for ``weights_only``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    preprocess = dataclasses.asdict(profile)
    for key in ("mean", "std"):
        if preprocess[key] is not None:
            preprocess[key] = list(preprocess[key])
    torch.save({"model_state_dict": state, "preprocess": preprocess, "detector": detector_name, **extra}, path)
    return path
