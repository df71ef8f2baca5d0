"""A detector + Grad-CAM in one batched pass: crops -> fake_prob, heatmap and embedding per face.

Any detector of pipeline/detectors/registry.py: its spec names the Grad-CAM target layer, the embedding
layer and what the output means. One forward pass per batch gives the outputs (``cam.outputs``, turned
into one fake logit per face), the embedding (a hook on the spec's embedding layer; 512-d ``last_bn`` for
the seed) and the Grad-CAM activations; one backward pass of the fake logit gives the CAM gradients. Grad-CAM needs
autograd, so this never runs under ``no_grad``/``inference_mode``. Every parameter outside the target
block is frozen: the backward pass then stops at the target block (about 3x faster on CPU, identical
CAMs; NOTES.md).

Precision (the seed's InceptionResnetV1 only; other detectors run in fp32): Grad-CAM's block (block8) and
the head always run in fp32 — bf16 there breaks pytorch-grad-cam
and moves the CAMs (NOTES.md). The trunk before it needs no gradient at all, so it may run as a frozen
bf16/fp16 copy (``trunk_dtype``): on the 2-core AVX512-BF16 CPU at 256 px that made the whole pass 1.7-2.2x
faster, with |ΔP(fake)| ~1e-5 and |ΔCAM| <= 0.03 on random weights (the benchmark re-checks it on every run).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM

from pipeline.detectors.registry import DetectorSpec, FakeLogitTarget, detector, fake_logit
from pipeline.models import LoadedModel
from pipeline.types import FaceBox, FaceScore, PreprocessProfile


def target_layer(module: torch.nn.Module, spec: DetectorSpec | None = None) -> torch.nn.Module:
    """The Grad-CAM target of ``spec`` (default: the seed's, the last conv block of InceptionResnetV1's
    final Block8 branch)."""
    return (spec or detector("seed-irv1")).target_layer(module)


def preprocess(crops: Sequence[np.ndarray], profile: PreprocessProfile, device: torch.device) -> torch.Tensor:
    """S×S×3 uint8 RGB crops -> N×3×input_px×input_px float32 model input on ``device``.

    Same arithmetic as the seed recipe: 0..255 floats, bilinear resize (align_corners=False), ``*scale``,
    then (x - mean) / std when the profile has them.
    """
    batch = torch.from_numpy(np.stack([np.asarray(c, dtype=np.uint8) for c in crops]))
    if device.type != "cpu" and torch.cuda.is_available():
        # page-locked uint8 (4x smaller than float): the copy runs asynchronously, ordered on the stream
        batch = batch.pin_memory()
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    if x.shape[-1] != profile.input_px or x.shape[-2] != profile.input_px:
        x = F.interpolate(x, size=(profile.input_px, profile.input_px), mode=profile.resize, align_corners=False)
    x = x * profile.scale
    if profile.mean is not None:
        x = x - torch.tensor(profile.mean, device=device).view(1, 3, 1, 1)
    if profile.std is not None:
        x = x / torch.tensor(profile.std, device=device).view(1, 3, 1, 1)
    return x.contiguous()


# InceptionResnetV1.forward up to (not including) block8, in order; facenet-pytorch 2.5.x
TRUNK = (
    "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
    "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3",
)  # fmt: skip


class LowPrecisionTrunk(torch.nn.Module):
    """InceptionResnetV1 (classify=True) whose trunk runs as a frozen copy in ``dtype`` without autograd;
    block8 and the head are the original fp32 modules (shared, not copied). Same forward as facenet's.

    Input N×3×S×S float32, output N×1 float32 logits.
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        trunk = torch.nn.Sequential(*(copy.deepcopy(getattr(module, name)) for name in TRUNK))
        self.trunk = trunk.to(dtype).requires_grad_(False).eval()
        self.head = module  # registered so hooks and .to() see it; only block8 onwards runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.head
        with torch.no_grad():  # nothing before block8 needs a gradient: inputs and weights are frozen
            h = self.trunk(x.to(self.dtype))
        h = m.block8(h.float())
        h = m.dropout(m.avgpool_1a(h))
        h = m.last_bn(m.last_linear(h.view(h.shape[0], -1)))
        return m.logits(h)


class FaceClassifier:
    """Scores face crops with Grad-CAM heatmaps. Build once per process, reuse, ``close()`` at the end.

    Takes over ``model.module`` while open: it freezes every parameter outside the target block and
    switches it to channels-last (the ``requires_grad`` flags and layout come back on ``close()``).
    Not thread-safe: one ``score`` at a time.
    """

    def __init__(
        self, model: LoadedModel, *, channels_last: bool = True, trunk_dtype: torch.dtype = torch.float32
    ) -> None:
        """``channels_last``: NHWC layout; at 256 px on the 2-core CPU it gave 21.6 vs 18.2 faces/s
        at batch 32 and 12.9 vs 11.8 at batch 1, with the same scores (to ~1e-6).
        ``trunk_dtype``: float32 runs facenet's own forward (the reference); bfloat16/float16 run the
        trunk as a low-precision copy (``LowPrecisionTrunk``)."""
        self.model = model
        self.profile = model.info.profile
        self.spec = spec = detector(model.info.detector)
        module = model.module.eval()
        self._module = module
        self.device = next(module.parameters()).device
        self._saved_flags = [p.requires_grad for p in module.parameters()]
        target = spec.target_layer(module)
        module.requires_grad_(False)
        target.requires_grad_(True)
        self.channels_last = channels_last
        if channels_last:
            module.to(memory_format=torch.channels_last)
        self._embeddings: torch.Tensor | None = None
        self._embedding_hook = spec.embedding_layer(module).register_forward_hook(self._keep_embedding)
        if not spec.low_precision_trunk:
            trunk_dtype = torch.float32
        self.trunk_dtype = trunk_dtype
        # the copy inherits channels-last; it is a snapshot: weights changed later are not seen
        net = module if trunk_dtype == torch.float32 else LowPrecisionTrunk(module, trunk_dtype)
        self.net = net  # what the CAM runs: N×3×S×S float32 -> N×1 logits (the benchmark times it alone)
        self._cam: GradCAM | None = GradCAM(model=net, target_layers=[target])
        self._targets = [FakeLogitTarget(spec.output)]

    def _keep_embedding(self, _module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._embeddings = output.detach().flatten(1)

    @property
    def hook_count(self) -> int:
        """How many hooks this classifier holds on the model (0 after ``close()``)."""
        cam_hooks = len(self._cam.activations_and_grads.handles) if self._cam is not None else 0
        return cam_hooks + (self._embedding_hook is not None)

    def score(self, crops: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[FaceScore]:
        """One FaceScore per crop, in order. ``crops``: S×S×3 uint8 RGB (S = profile.crop_px).

        Each FaceScore has ``fake_prob`` = sigmoid(logit), ``heatmap`` input_px×input_px float32 in
        [0, 1], ``embedding`` 512 float32 and the crop itself.
        """
        if len(crops) != len(boxes):
            raise ValueError(f"score() needs one box per crop, got {len(crops)} crops and {len(boxes)} boxes")
        if not crops:
            return []
        if self._cam is None:
            raise RuntimeError("FaceClassifier is closed")
        size = self.profile.crop_px
        for crop in crops:
            if crop.shape != (size, size, 3) or crop.dtype != np.uint8:
                raise ValueError(f"crops must be {size}×{size}×3 uint8 RGB, got {crop.dtype} {crop.shape}")
        cam = self._cam
        try:
            # Grad-CAM needs autograd even when a caller runs us under no_grad or inference_mode.
            with torch.inference_mode(False), torch.enable_grad():
                x = preprocess(crops, self.profile, self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                heatmaps = cam(input_tensor=x, targets=self._targets * len(crops))
            logits = fake_logit(self.spec.output, cam.outputs.detach().float()).cpu()
            if self._embeddings is None:
                raise RuntimeError("the embedding hook did not fire")
            embeddings = self._embeddings.float().cpu().numpy()
        finally:
            # Drop the retained autograd graph and activations now rather than at the next call.
            cam.outputs = None
            cam.activations_and_grads.clear()
            self._embeddings = None
        probs = torch.sigmoid(logits).numpy().astype(np.float64)
        heatmaps = np.clip(np.nan_to_num(np.asarray(heatmaps, dtype=np.float32), nan=0.0), 0.0, 1.0)
        return [
            FaceScore(
                box=box,
                fake_prob=float(prob),
                heatmap=np.ascontiguousarray(heat),
                embedding=emb.astype(np.float32).copy(),
                crop=crop,
            )
            for box, prob, heat, emb, crop in zip(boxes, probs, heatmaps, embeddings, crops, strict=True)
        ]

    def close(self) -> None:
        """Release the Grad-CAM and embedding hooks and restore ``requires_grad``; safe to call twice."""
        if self._cam is not None:
            self._cam.activations_and_grads.release()
            self._cam = None
        if self._embedding_hook is not None:
            self._embedding_hook.remove()
            self._embedding_hook = None
            for param, flag in zip(self._module.parameters(), self._saved_flags, strict=True):
                param.requires_grad_(flag)
            if self.channels_last:
                self._module.to(memory_format=torch.contiguous_format)

    def __enter__(self) -> FaceClassifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
