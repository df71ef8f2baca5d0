"""The MTCNN adapter: frames -> FaceBox lists, and boxes -> face crops. Every MTCNN quirk is fixed here.

Quirks handled: ``detect`` returns None (not an empty array) for a frame without faces, ``[None]`` as its
probabilities, object arrays whose layout depends on how many faces each frame has, boxes that reach
outside the frame, and results in probability order rather than a stable spatial order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from pipeline.types import FaceBox, Frame, PreprocessProfile

_MTCNN_CELL_PX = 12  # PNet's window: a smaller min face size would make MTCNN upsample the image


def pyramid_has_a_scale(height_px: int, width_px: int, min_face_px: float) -> bool:
    """Whether MTCNN's image pyramid has at least one scale for an image of this size.

    facenet_pytorch's ``detect_face`` starts at ``m = 12 / minsize`` and adds scales while
    ``min(h, w) * m * factor**k >= 12``; with no scale at all it calls ``torch.cat([])`` and raises.
    So an image can hold a face only when ``min(h, w) * (12 / minsize) >= 12``, i.e. its short side
    is at least ``min_face_px`` (computed with detect_face's own float expression, so the edge agrees).
    """
    return min(height_px, width_px) * (12.0 / min_face_px) >= 12


class _ChannelsLastMaxPool(torch.nn.Module):
    """``pool`` computed on a channels-last copy, returned in the input's (contiguous) layout.

    On CPU, torch's NCHW max-pool is 3-12x slower than its NHWC kernel on MTCNN's shapes (e.g. 7.0 vs
    2.7 ms for 1×10×382×214, 6.5 vs 0.6 ms for RNet's 40×28×22×22); a maximum is exact, so the outputs
    are bit-identical (checked on 58 frames of the bench clip and ../shared/media: same boxes, probabilities
    and landmarks) and the convolutions after it see the layout they always saw.
    """

    def __init__(self, pool: torch.nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x.contiguous(memory_format=torch.channels_last))
        # keep the layout torch's own pool would have returned (PNet sees NHWC inputs at some pyramid
        # scales, from the permuted image): the next conv then picks the same kernel, bit for bit
        return y if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else y.contiguous()


def _fast_pools(mtcnn: MTCNN) -> None:
    """Swap every MaxPool2d of PNet/RNet/ONet for :class:`_ChannelsLastMaxPool` (CPU only)."""
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, child in list(net.named_children()):
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(net, name, _ChannelsLastMaxPool(child))


class FaceDetector:
    """MTCNN built once; ``detect`` runs one MTCNN call per chunk of equal-size frames."""

    def __init__(
        self,
        device: torch.device,
        *,
        min_face_px: int = 40,
        prob_floor: float = 0.9,
        max_side_px: int = 640,
    ) -> None:
        """``min_face_px``: smallest face searched for, in original-frame pixels; ``prob_floor``: faces
        with a lower detector probability are dropped; ``max_side_px``: frames whose long side is larger
        are detected on a downscaled copy (boxes come back in original pixels)."""
        if min_face_px < 1 or max_side_px < 1 or not 0.0 <= prob_floor <= 1.0:
            raise ValueError(
                f"need min_face_px >= 1, max_side_px >= 1, prob_floor in [0, 1]; "
                f"got {min_face_px}, {max_side_px}, {prob_floor}"
            )
        self.device = device
        self.min_face_px = min_face_px
        self.prob_floor = prob_floor
        self.max_side_px = max_side_px
        self._mtcnn = MTCNN(
            keep_all=True,
            post_process=False,
            select_largest=False,
            min_face_size=min_face_px,
            device=device,
        ).eval()
        if device.type == "cpu":
            _fast_pools(self._mtcnn)
        # ``detect`` sets the shared MTCNN's min_face_size per call: concurrent analyses (each decoding
        # and detecting in its own thread on an accelerator, see pipeline/run.py) must not interleave.
        self._lock = threading.Lock()

    def detect(
        self, frames: Sequence[Frame], min_face_px: int | None = None, max_side_px: int | None = None
    ) -> list[list[FaceBox]]:
        """One list of FaceBox per frame (possibly empty), in frame order.

        ``min_face_px`` and ``max_side_px`` override the detector's defaults for this call.

        Faces are ordered left to right (x1, then y1) and numbered ``face_index`` 0..k-1; ``xyxy`` and
        ``landmarks`` (5×2 float32) are in original-frame pixels. All frames must share one size.
        """
        if not frames:
            return []
        h, w = frames[0].image.shape[:2]
        for f in frames:
            if f.image.shape[:2] != (h, w):
                raise ValueError(
                    f"a detection chunk needs frames of one size: frame {frames[0].index} is {w}×{h}, "
                    f"frame {f.index} is {f.image.shape[1]}×{f.image.shape[0]}"
                )
        scale = min(1.0, (max_side_px or self.max_side_px) / max(h, w))
        if scale < 1.0:
            dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
            images = [cv2.resize(f.image, (dw, dh), interpolation=cv2.INTER_AREA) for f in frames]
            back = np.array([w / dw, h / dh], dtype=np.float64)  # detection px -> original px, per axis
        else:
            dw, dh = w, h
            images = [f.image for f in frames]
            back = None
        # MTCNN's min_face_size only sets where its image pyramid starts; keep it in original pixels.
        min_px = self.min_face_px if min_face_px is None else min_face_px
        mtcnn_min_px = min_px if back is None else max(float(_MTCNN_CELL_PX), min_px * dw / w)
        if not pyramid_has_a_scale(dh, dw, mtcnn_min_px):
            return [[] for _ in frames]  # too small to hold a face of the searched size (1×1, 38×38, 1×5000...)
        batch = np.ascontiguousarray(np.stack(images))  # N×H×W×3 uint8: MTCNN then keeps batch layout
        with self._lock, torch.no_grad():
            self._mtcnn.min_face_size = mtcnn_min_px
            boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
        return [self._normalise(frame, boxes[i], probs[i], points[i], back, (w, h)) for i, frame in enumerate(frames)]

    def _normalise(
        self,
        frame: Frame,
        boxes: object,
        probs: object,
        points: object,
        back: np.ndarray | None,
        size_wh: tuple[int, int],
    ) -> list[FaceBox]:
        if boxes is None:
            return []
        xyxy = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        if len(xyxy) == 0:
            return []
        prob = np.asarray(probs, dtype=np.float64).reshape(-1)
        marks = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        if back is not None:
            xyxy = xyxy * np.tile(back, 2)
            marks = marks * back
        w, h = size_wh
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        # A box under 1 px on a side would crop to nothing after extract_face's int() truncation.
        keep = (
            (prob >= self.prob_floor)
            & np.isfinite(xyxy).all(axis=1)
            & (xyxy[:, 2] - xyxy[:, 0] >= 1.0)
            & (xyxy[:, 3] - xyxy[:, 1] >= 1.0)
        )
        order = [i for i in np.lexsort((xyxy[:, 1], xyxy[:, 0])) if keep[i]]
        return [
            FaceBox(
                frame_index=frame.index,
                face_index=k,
                xyxy=tuple(float(v) for v in xyxy[i]),  # type: ignore[arg-type]
                detector_prob=float(min(1.0, max(0.0, prob[i]))),
                landmarks=marks[i].astype(np.float32),
            )
            for k, i in enumerate(order)
        ]


_PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}  # PreprocessProfile.resize


def crop_faces(image: np.ndarray, boxes: Sequence[FaceBox], profile: PreprocessProfile) -> list[np.ndarray]:
    """One ``crop_px``×``crop_px``×3 uint8 RGB crop per box from an H×W×3 uint8 RGB image.

    Reproduces facenet_pytorch's ``extract_face`` on a PIL image bit for bit (margin in output pixels,
    int() truncation, clamp to the image, PIL crop, bilinear resize): the seed model was trained on it.
    ``profile.resize`` "bicubic" resizes with PIL's bicubic instead (MesoNet's examples were made so).
    """
    if not boxes:
        return []
    pil = Image.fromarray(image)
    size, margin = profile.crop_px, profile.margin_px
    width, height = pil.size
    crops = []
    for face in boxes:
        x1, y1, x2, y2 = face.xyxy
        mx = margin * (x2 - x1) / (size - margin)
        my = margin * (y2 - y1) / (size - margin)
        box = (
            int(max(x1 - mx / 2, 0)),
            int(max(y1 - my / 2, 0)),
            int(min(x2 + mx / 2, width)),
            int(min(y2 + my / 2, height)),
        )
        crop = pil.crop(box).resize((size, size), _PIL_FILTERS[profile.resize])
        crops.append(np.asarray(crop, dtype=np.uint8).copy())
    return crops
