"""Weights the tests make: random InceptionResnetV1s that still react to their input, and the seed recipe."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from PIL import Image

from bench.weights import calibrated_model  # noqa: F401  (one definition, shared with the benchmark)


def seed_recipe(model: torch.nn.Module, image: np.ndarray) -> float:
    """The community seed's inference, written out independently of the pipeline."""
    mtcnn = MTCNN(select_largest=False, post_process=False)
    face = mtcnn(Image.fromarray(image))
    face = face.unsqueeze(0)
    face = F.interpolate(face, size=(256, 256), mode="bilinear", align_corners=False)
    face = face / 255.0
    with torch.no_grad():
        return torch.sigmoid(model(face)).item()
