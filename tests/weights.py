"""Weights the tests make: random InceptionResnetV1s that still react to their input, and the seed recipe."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from PIL import Image

from pipeline.models import build_model


def calibrated_model() -> torch.nn.Module:
    """Random weights whose BatchNorm statistics come from a batch of noise.

    Plain random init gives almost the same logit for every input, which would make parity and
    batch tests pass vacuously; with calibrated BN statistics the output depends on the face.
    """
    torch.manual_seed(0)
    model = build_model()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average: one batch sets the statistics
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 96, 96))
    return model.eval()


def seed_recipe(model: torch.nn.Module, image: np.ndarray) -> float:
    """The community seed's inference, written out independently of the pipeline."""
    mtcnn = MTCNN(select_largest=False, post_process=False)
    face = mtcnn(Image.fromarray(image))
    face = face.unsqueeze(0)
    face = F.interpolate(face, size=(256, 256), mode="bilinear", align_corners=False)
    face = face / 255.0
    with torch.no_grad():
        return torch.sigmoid(model(face)).item()


