"""The loaded models of one process: detector, classifier and Grad-CAM, built once and reused."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch

from pipeline.batching import ScoreFn
from pipeline.classify import FaceClassifier
from pipeline.config import Settings
from pipeline.detect import FaceDetector, crop_faces
from pipeline.detectors import registry
from pipeline.device import PRECISION_NAMES, pick_device, pick_precision
from pipeline.ensemble import Ensemble, ensemble_info, read_stacking
from pipeline.errors import CheckpointError
from pipeline.models import LoadedModel, find_checkpoint, load_model
from pipeline.types import FaceBox, FaceCrop, FaceScore, ModelInfo, Report


@dataclass
class Engine:
    """Everything that holds weights. A context manager: ``close()`` releases the CAM hooks.

    Build with ``Engine.open(settings)``; pass to ``analyze()`` as many times as you like (one at a time:
    the classifier's CAM hooks are not thread-safe, the stream worker serialises calls).
    """

    model: LoadedModel
    detector: FaceDetector
    classifier: FaceClassifier
    # when set (a Ray actor's pipeline.batching.SharedBatches), every score goes through it, not the classifier
    scorer: ScoreFn | None = None
    # several detectors (Settings.ensemble): ``model`` then describes the ensemble, ``classifier`` is its first
    ensemble: Ensemble | None = None

    @classmethod
    def open(cls, settings: Settings, *, allow_untrained: bool = False) -> Engine:
        """Pick the device once, find and load the checkpoint, build MTCNN and the CAM.

        Raises NoModel when no checkpoint is found and ``allow_untrained`` is False.
        """
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        if len(settings.ensemble) > 1:
            return cls.from_members([load_model(p, device) for p in settings.ensemble], settings)
        path = None
        if settings.checkpoint is not None or not allow_untrained:
            path = find_checkpoint(settings.checkpoint, settings.resolved_models_dir)
        return cls.from_model(load_model(path, device, allow_untrained=allow_untrained), settings)

    @classmethod
    def from_model(cls, model: LoadedModel, settings: Settings) -> Engine:
        """An engine around an already loaded model: MTCNN and the classifier at ``settings.precision``
        (``info.precision`` says which dtype the trunk runs in)."""
        model, classifier = _classifier(model, settings)
        return cls(model=model, detector=_face_detector(model, settings), classifier=classifier)

    @classmethod
    def from_members(cls, members: Sequence[LoadedModel], settings: Settings, *, stacking: bool = True) -> Engine:
        """An ensemble engine (pipeline/ensemble.py) around >= 2 loaded detectors on one device; its
        fusion is the stacking of its card in the models directory when there is one (and ``stacking``)."""
        opened = [_classifier(m, settings) for m in members]  # each member at its own precision
        models, classifiers = tuple(m for m, _ in opened), tuple(c for _, c in opened)
        infos = tuple(m.info for m in models)
        info = ensemble_info(infos, members[0].info.device)
        fitted = read_stacking(settings.resolved_models_dir, info) if stacking else None
        if fitted is not None and len(fitted.weights) != len(members):
            raise CheckpointError(f"the ensemble card has {len(fitted.weights)} weights for {len(members)} members")
        if fitted is not None:
            info = dataclasses.replace(info, calibrated_threshold=fitted.threshold, card_summary=fitted.describe())
        ensemble = Ensemble(models, classifiers, fitted)
        detector = _face_detector(models[0], settings)  # one MTCNN finds the faces every member scores
        return cls(LoadedModel(models[0].module, info), detector, classifiers[0], ensemble=ensemble)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def detector_infos(self) -> tuple[ModelInfo, ...]:
        """An ensemble's detectors, in order; () for one detector."""
        return () if self.ensemble is None else self.ensemble.infos

    def crop(self, image: np.ndarray, boxes: Sequence[FaceBox]) -> list[FaceCrop]:
        """Each box's crop (H×W×3 uint8 RGB image) as the model wants it; an ensemble's: one per member."""
        if self.ensemble is not None:
            return self.ensemble.crop(image, boxes)
        return crop_faces(image, boxes, self.info.profile)

    def describe(self, report: Report) -> Report:
        """``report`` naming an ensemble's detectors and fusion rule (unchanged for one detector)."""
        if self.ensemble is None:
            return report
        return dataclasses.replace(report, detectors=self.detector_infos, fusion=self.ensemble.fusion)

    def score(self, crops: Sequence[FaceCrop], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        """Classify+CAM ``crops`` (from ``crop``): ``scorer`` when set, else the ensemble's fusion, else
        ``FaceClassifier.score``."""
        if self.scorer is not None:
            return self.scorer(crops, boxes)
        if self.ensemble is not None:
            return self.ensemble.score(crops, boxes)
        return self.classifier.score(crops, boxes)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.ensemble is not None:
            self.ensemble.close()  # its first classifier is ``classifier``
        else:
            self.classifier.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _classifier(model: LoadedModel, settings: Settings) -> tuple[LoadedModel, FaceClassifier]:
    """The classifier of ``model`` at ``settings.precision`` (fp32 unless the detector has a low-precision
    trunk), and the model with ``info.precision`` saying which dtype its trunk runs in."""
    device = torch.device(model.info.device)
    dtype = pick_precision(settings.precision, device)
    if not registry.detector(model.info.detector).low_precision_trunk:
        dtype = torch.float32  # only the seed's trunk has a low-precision copy (pipeline/classify.py)
    model = dataclasses.replace(model, info=dataclasses.replace(model.info, precision=PRECISION_NAMES[dtype]))
    return model, FaceClassifier(model, trunk_dtype=dtype)


def _face_detector(model: LoadedModel, settings: Settings) -> FaceDetector:
    """MTCNN on ``model``'s device, with the settings' detection limits."""
    return FaceDetector(
        torch.device(model.info.device),
        min_face_px=settings.min_face_px,
        prob_floor=settings.detect_prob_floor,
        max_side_px=settings.detect_max_side_px,
    )
