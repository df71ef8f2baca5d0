"""The naive loop: what the seed notebook does, per frame, written out independently of the pipeline.

Per decoded frame: RGB conversion, MTCNN on the full frame (facenet-pytorch's default ``min_face_size``
20, no downscale), then for each face alone: crop (``MTCNN.extract``), resize to the model input, one
forward pass at batch 1 in fp32 with every parameter trainable, then a second pass for Grad-CAM at batch
1. The model is its own copy (``load_model`` of the same checkpoint), so the pipeline's frozen,
channels-last classifier cannot leak into it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pipeline.classify import target_layer
from pipeline.models import load_model


@dataclass
class NaiveResult:
    """One naive run over the first ``frames`` frames. Seconds per stage, summed over frames."""

    frames: int = 0
    faces: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"decode": 0.0, "detect": 0.0, "classify": 0.0, "cam": 0.0}
    )
    wall_s: float = 0.0
    fake_probs: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames per wall second."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0


class NaiveLoop:
    """Built once per bench process (model load and MTCNN are not timed); ``run`` may be called repeatedly."""

    def __init__(self, checkpoint: Path, device: torch.device, *, min_face_px: int = 20, prob_floor: float = 0.9):
        """``min_face_px``: MTCNN's ``min_face_size`` on the full frame; ``prob_floor``: the same detector
        confidence floor the pipeline applies (so both count the same faces)."""
        loaded = load_model(checkpoint, device)
        self.profile = loaded.info.profile
        self.device = device
        self.model = loaded.module.eval()
        self.model.requires_grad_(True)  # the seed never froze anything
        self.prob_floor = prob_floor
        self.mtcnn = MTCNN(
            image_size=self.profile.crop_px,
            margin=self.profile.margin_px,
            keep_all=True,
            post_process=False,
            select_largest=False,
            min_face_size=min_face_px,
            device=device,
        ).eval()
        self.cam = GradCAM(model=self.model, target_layers=[target_layer(self.model)])

    def close(self) -> None:
        """Release the Grad-CAM hooks."""
        self.cam.activations_and_grads.release()

    def _to_input(self, face: torch.Tensor) -> torch.Tensor:
        """3×crop×crop float 0..255 -> 1×3×input×input model input (the seed recipe)."""
        x = face.unsqueeze(0).to(self.device)
        x = F.interpolate(x, size=(self.profile.input_px,) * 2, mode="bilinear", align_corners=False)
        return x * self.profile.scale

    def run(self, path: Path, max_frames: int) -> NaiveResult:
        """Analyse the first ``max_frames`` decoded frames of ``path``, one frame and one face at a time."""
        result = NaiveResult()
        sec = result.seconds
        started = time.perf_counter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoded = container.decode(stream)
            while result.frames < max_frames:
                t0 = time.perf_counter()
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                image = Image.fromarray(frame.to_ndarray(format="rgb24"))
                t1 = time.perf_counter()
                sec["decode"] += t1 - t0
                with torch.no_grad():
                    boxes, probs = self.mtcnn.detect(image)
                    faces = []
                    if boxes is not None:
                        keep = np.asarray(probs, dtype=np.float64) >= self.prob_floor
                        if keep.any():
                            crops = self.mtcnn.extract(image, boxes[keep], None)
                            faces = list(crops.reshape(-1, *crops.shape[-3:]))
                t2 = time.perf_counter()
                sec["detect"] += t2 - t1
                for face in faces:
                    t3 = time.perf_counter()
                    x = self._to_input(face)
                    with torch.no_grad():
                        prob = torch.sigmoid(self.model(x)[0, 0]).item()
                    t4 = time.perf_counter()
                    heat = self.cam(input_tensor=x, targets=[ClassifierOutputTarget(0)])
                    assert heat.shape[0] == 1
                    t5 = time.perf_counter()
                    sec["classify"] += t4 - t3
                    sec["cam"] += t5 - t4
                    result.fake_probs.append(prob)
                result.faces += len(faces)
                result.frames += 1
        result.wall_s = time.perf_counter() - started
        return result
