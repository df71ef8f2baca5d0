"""The bundled examples the page offers: the public-domain astronaut photo in ``examples/`` and a short
three-person clip generated from it at first use (nothing with real footage is committed).

PyAV, NumPy and Pillow are imported only when the clip is made, so importing this module is free.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("dff.ui")

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # present in a source checkout
PHOTO_NAME = "astronaut.jpg"
CLIP_NAME = "three_people.mp4"
# where the astronaut's head and shoulders are in the 512×512 photo (x1, y1, x2, y2)
HEAD_BOX = (140, 20, 310, 190)


def make_clip(photo: Path, out: Path, *, seconds: float = 4.0, fps: int = 10, width: int = 640) -> Path:
    """Three copies of the photo's face (one mirrored) drifting across a grey 16:9 canvas, H.264.

    Written to a temporary name first, so a crash never leaves a half-written example behind.
    """
    import numpy as np
    from PIL import Image

    from pipeline.encode import encode_video

    height = width * 9 // 16
    size = width * 15 // 64  # each face tile: 150 px at 640 wide
    head = Image.open(photo).convert("RGB").crop(HEAD_BOX)
    tiles = [
        np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
        for img in (head, head.transpose(Image.Transpose.FLIP_LEFT_RIGHT), head)
    ]
    n_frames = round(seconds * fps)
    starts = [(width // 32 + i * width * 5 // 16, height // 6 + (i % 2) * height // 12) for i in range(3)]

    def frames() -> Iterator[np.ndarray]:
        for t in range(n_frames):
            canvas = np.full((height, width, 3), 90, dtype=np.uint8)
            for (x0, y0), tile in zip(starts, tiles, strict=True):
                x = min(x0 + 2 * t, width - size)
                canvas[y0 : y0 + size, x : x + size] = tile
            yield canvas

    out.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(out, frames(), fps)


def example_files(data_dir: Path, examples_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """The example photo and clip that exist (the clip is made into ``data_dir/examples`` once).

    A missing photo or a failed encode only drops that example (logged); the page works without them.
    """
    photo = examples_dir / PHOTO_NAME
    if not photo.is_file():
        log.info("no example photo at %s; the page shows no examples", photo)
        return []
    clip = data_dir / "examples" / CLIP_NAME
    if not clip.is_file():
        try:
            make_clip(photo, clip)
        except Exception:  # an example is a convenience: never let it stop the server
            log.warning("could not make the example clip %s", clip, exc_info=True)
            return [photo]
    return [photo, clip]
