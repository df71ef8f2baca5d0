"""The still-image source: one photo, decoded at open, yielded as a one-frame "video"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import DecodeError, MediaTooLarge, UnsupportedMedia
from pipeline.sources.base import Source
from pipeline.sources.probe import check_pixels
from pipeline.sources.rotation import EXIF_ROTATION, clockwise, rotate
from pipeline.types import Frame, MediaInfo, SamplingPolicy

_PIL_STILLS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM", "ICO"})


class StillSource(Source):
    """One decoded image (H×W×3 uint8 RGB, rotation applied) as a one-frame source at time 0."""

    def __init__(self, info: MediaInfo, policy: SamplingPolicy, image: np.ndarray) -> None:
        if not info.is_image:
            raise ValueError(f"a StillSource needs an image's MediaInfo, got a video's ({info.name})")
        self.info = info
        self.policy = policy
        self.planned_frames = 1
        self._image: np.ndarray | None = image
        self._taken = False

    def frames(self) -> Iterator[Frame]:
        if self._taken:
            raise RuntimeError("StillSource.frames() can be called only once")
        self._taken = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        if self._image is not None:
            yield Frame(index=0, time_s=0.0, image=self._image)

    def close(self) -> None:
        self._image = None


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H×W×3 uint8 RGB (16-bit scaled down, alpha dropped, palette expanded)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float32)
        if a.max(initial=0.0) > 255:
            a = a / 257.0  # 16-bit samples
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # palette transparency must go through RGBA to avoid Pillow's warning
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _decode_pil(im: Image.Image, name: str) -> np.ndarray:
    """The whole still, EXIF orientation applied: H×W×3 uint8 RGB. Raises MediaTooLarge or DecodeError."""
    try:
        return _pil_to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise MediaTooLarge(f"{name} is too large to decode safely: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DecodeError(f"{name} is damaged or truncated: {e}") from None


def _open_pil(path: Path, max_pixels: int) -> Image.Image | None:
    """Pillow's lazy open (header only), pixel cap checked on its header; None when Pillow cannot read it."""
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise MediaTooLarge(f"{path.name} is too large to decode safely: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    try:
        check_pixels(path.name, *im.size, max_pixels)  # Pillow's header, also for formats it then leaves to PyAV
    except MediaTooLarge:
        im.close()
        raise
    return im


def open_still(
    path: Path, container: Any, stream: Any, facts: dict[str, Any], policy: SamplingPolicy, max_pixels: int
) -> StillSource:
    """Decode the still now, not in ``frames()``: a photo that cannot be decoded is an error before anything
    is reported (a truncated JPEG would otherwise become an INCOMPLETE "no face" verdict). ``container`` is
    the caller's to close; the returned source holds only the pixels."""
    name = path.name
    check_pixels(name, stream.width, stream.height, max_pixels)  # from the header: nothing decoded yet
    im = _open_pil(path, max_pixels)
    if im is not None and im.format in _PIL_STILLS:
        with im:
            width, height = im.size
            image = _decode_pil(im, name)  # first: a PNG's getexif() decodes it, raising on damaged data
            rotation = EXIF_ROTATION.get(int(im.getexif().get(0x0112, 1) or 1), 0)
    else:
        if im is not None:
            im.close()
        elif container.format.name == "image2":
            # image2 is FFmpeg's guess from the file's extension alone: no image signature matched the
            # bytes, and Pillow knows none either, so this is another kind of file, not a damaged image
            raise UnsupportedMedia(
                f"{name} is not an image: its bytes match no image format (only its name says {path.suffix or 'image'})"
            )
        try:
            av_frame = next(container.decode(stream))
            rotation = clockwise(av_frame.rotation)
            image = rotate(av_frame.to_ndarray(format="rgb24"), rotation)
        except (StopIteration, av.FFmpegError) as e:
            raise DecodeError(f"{name} is damaged: the image could not be decoded ({e})") from None
        width, height = stream.width, stream.height
    if rotation in (90, 270):
        width, height = height, width
    info = MediaInfo(
        **facts,
        width=width,
        height=height,
        fps=None,
        duration_s=None,
        rotation_deg=rotation,
        is_image=True,
        frame_count=1,
    )
    return StillSource(info, policy, image)
