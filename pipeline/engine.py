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
from pipeline.detect import FaceDetector
from pipeline.detectors import registry
from pipeline.device import PRECISION_NAMES, pick_device, pick_precision
from pipeline.models import LoadedModel, find_checkpoint, load_model
from pipeline.types import FaceBox, FaceScore, ModelInfo


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

    @classmethod
    def open(cls, settings: Settings, *, allow_untrained: bool = False) -> Engine:
        """Pick the device once, find and load the checkpoint, build MTCNN and the CAM.

        Raises NoModel when no checkpoint is found and ``allow_untrained`` is False.
        """
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        device = pick_device(settings.device)
        path = None
        if settings.checkpoint is not None or not allow_untrained:
            path = find_checkpoint(settings.checkpoint, settings.resolved_models_dir)
        return cls.from_model(load_model(path, device, allow_untrained=allow_untrained), settings)

    @classmethod
    def from_model(cls, model: LoadedModel, settings: Settings) -> Engine:
        """An engine around an already loaded model: MTCNN and the classifier at ``settings.precision``
        (``info.precision`` says which dtype the trunk runs in)."""
        device = torch.device(model.info.device)
        dtype = pick_precision(settings.precision, device)
        if not registry.detector(model.info.detector).low_precision_trunk:
            dtype = torch.float32  # only the seed's trunk has a low-precision copy (pipeline/classify.py)
        model = dataclasses.replace(model, info=dataclasses.replace(model.info, precision=PRECISION_NAMES[dtype]))
        detector = FaceDetector(
            device,
            min_face_px=settings.min_face_px,
            prob_floor=settings.detect_prob_floor,
            max_side_px=settings.detect_max_side_px,
        )
        return cls(model=model, detector=detector, classifier=FaceClassifier(model, trunk_dtype=dtype))

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def score(self, crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        """Classify+CAM ``crops`` (S×S×3 uint8 RGB): ``FaceClassifier.score``, or ``scorer`` when set."""
        return (self.scorer or self.classifier.score)(crops, boxes)

    def close(self) -> None:
        self.classifier.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
