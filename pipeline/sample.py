"""PyAV decode -> Iterator[Frame]; a still image is a one-frame "video". Sampling policies live here.

Every PyAV quirk is handled in this module and nowhere else:

- rotation: av 18 has no stream-level display-matrix getter, so the first frame is decoded at open and
  its ``VideoFrame.rotation`` (counter-clockwise degrees) is read; ``MediaInfo.rotation_deg`` stores
  the clockwise display rotation as phones mean it (0/90/180/270). Flips in the matrix are ignored.
- ``frame.time`` is None without pts (raw .h264): time falls back to ``index / fps``; it is NaN for frames
  flushed with ``decode(None)`` (no time_base): time is then ``pts * stream.time_base``. AVI frames carry
  reordered pts after B-frames, so AVI (a constant-rate container) is always timed by ``index / fps``.
- times are seconds since the stream's start_time (MPEG-TS starts at ~1.4 s), clamped non-decreasing.
- ``VideoFrame.side_data`` raises ValueError on side-data types av does not know (JPEG EXIF): never read.
- stills go through Pillow (EXIF orientation incl. mirroring, 16-bit, palette, alpha); PyAV only when
  Pillow cannot read them.
- the pixel cap is checked on the header (Pillow's, or the stream's for videos) before any decode, and
  every decoder gets ``max_pixels``: a frame larger than its header said is refused by FFmpeg itself.

What may be opened at all (allow-listed demuxers, nothing but the file itself) is pipeline/probe.py's.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import DecodeError, MediaTooLarge, UnsupportedMedia
from pipeline.probe import check_file, check_pixels, file_sha256, is_still, open_container
from pipeline.types import Frame, MediaInfo, SampleMode, SamplingPolicy

_EPS_S = 1e-6  # pts * time_base and k * every_s differ in the last float bits
_FALLBACK_FPS = 25.0  # FFmpeg's own guess when a stream states no rate at all
_PIL_STILLS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM", "ICO"})
# EXIF orientation -> clockwise display rotation (mirrored variants keep their rotation part)
_EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 90, 7: 90, 8: 270}


class _Schedule:
    """Presentation-time targets (seconds). A frame is taken when its time reaches the next target;
    every target at or before that frame's time is then used up, so one slot never yields two frames."""

    def __init__(self, *, step_s: float | None = None, targets_s: Sequence[float] = ()) -> None:
        self._step_s = step_s
        self._targets_s = list(targets_s)
        self._i = 0
        self.next_s: float | None = 0.0 if step_s is not None else (targets_s[0] if targets_s else None)

    def take(self, time_s: float) -> bool:
        if self.next_s is None or time_s < self.next_s - _EPS_S:
            return False
        if self._step_s is not None:
            # k * step rather than repeated addition: no drift over hours
            self.next_s = (math.floor((time_s + _EPS_S) / self._step_s) + 1) * self._step_s
        else:
            while self._i < len(self._targets_s) and self._targets_s[self._i] <= time_s + _EPS_S:
                self._i += 1
            self.next_s = self._targets_s[self._i] if self._i < len(self._targets_s) else None
        return True


def _rotate(image: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Rotate H×W×3 clockwise by ``rotation_deg``; contiguous so torch.from_numpy accepts it."""
    if rotation_deg == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation_deg // 90)))


def _clockwise(av_rotation: float | None) -> int:
    """PyAV's counter-clockwise ``VideoFrame.rotation`` -> clockwise display rotation in 0/90/180/270."""
    return (-round((av_rotation or 0) / 90) * 90) % 360


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


class MediaReader:
    """An open video or image. Use as a context manager; ``frames()`` may be iterated once.

    ``info`` is filled at open; ``planned_frames`` is how many frames the policy will yield when that
    is known (capped by ``max_frames``), else None.
    """

    info: MediaInfo
    planned_frames: int | None

    def __init__(self, path: Path, policy: SamplingPolicy, max_duration_s: float, max_image_pixels: int) -> None:
        self._path = path
        self._name = path.name
        self._policy = policy
        self._max_duration_s = max_duration_s
        self._max_image_pixels = max_image_pixels
        self._container: Any = None
        self._decoded: Iterator[Any] | None = None
        self._pil: Image.Image | None = None
        self._still: np.ndarray | None = None  # a still PyAV decoded at open (Pillow could not read it)
        self._gen: Generator[Frame, None, None] | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> MediaReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop a running ``frames()``, release the container and any open image; safe to call twice."""
        if self._gen is not None:
            self._gen.close()  # never resume decoding on a closed container
        if self._pil is not None:
            self._pil.close()
            self._pil = None
        if self._container is not None:
            self._container.close()
            self._container = None
        self._decoded = None

    def _open(self) -> None:
        path, name = self._path, self._name
        size = check_file(path)
        sha = file_sha256(path)
        self._container = open_container(path, max_pixels=self._max_image_pixels)
        cover_art = av.stream.Disposition.attached_pic  # mp3/m4a covers are one-picture "video" streams
        streams = [s for s in self._container.streams.video if not s.disposition & cover_art]
        if not streams:
            raise UnsupportedMedia(f"{name} has no video stream (audio-only or data file)")
        stream = streams[0]
        if stream.codec_context is None:
            raise UnsupportedMedia(f"{name} uses a video codec this installation cannot decode")
        fmt = self._container.format.name
        codec = stream.codec_context.codec.canonical_name
        facts = dict(name=name, size_bytes=size, sha256=sha, container=fmt, codec=codec)
        # the decoder itself refuses frames over the cap, whatever the header said (av applies these at open)
        stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(self._max_image_pixels)}
        if is_still(fmt):
            self._open_still(stream, facts)
        else:
            self._open_video(stream, facts)

    def _check_pixels(self, width: int, height: int) -> None:
        check_pixels(self._name, width, height, self._max_image_pixels)

    def _open_still(self, stream: Any, facts: dict[str, Any]) -> None:
        self._check_pixels(stream.width, stream.height)  # from the header: nothing decoded yet
        try:
            im: Image.Image | None = Image.open(self._path)  # lazy: reads the header only
        except Image.DecompressionBombError as e:
            raise MediaTooLarge(f"{self._name} is too large to decode safely: {e}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            im = None
        if im is not None:
            try:
                self._check_pixels(*im.size)  # Pillow's header, also for formats it then leaves to PyAV
            except MediaTooLarge:
                im.close()
                raise
        if im is not None and im.format in _PIL_STILLS:
            self._pil = im  # closed by close() when decoding fails
            rotation = _EXIF_ROTATION.get(int(im.getexif().get(0x0112, 1) or 1), 0)
            width, height = im.size
            # decoded now, not in frames(): a photo that cannot be decoded is an error before anything is
            # reported (a truncated JPEG would otherwise become an INCOMPLETE "no face" verdict)
            self._still = self._decode_pil(im)
            im.close()  # the pixels live in self._still now
            self._pil = None
        else:
            if im is not None:
                im.close()
            elif self._container.format.name == "image2":
                # image2 is FFmpeg's guess from the file's extension alone: no image signature matched the
                # bytes, and Pillow knows none either, so this is another kind of file, not a damaged image
                raise UnsupportedMedia(
                    f"{self._name} is not an image: its bytes match no image format (only its name says "
                    f"{self._path.suffix or 'image'})"
                )
            try:
                av_frame = next(self._container.decode(stream))
                rotation = _clockwise(av_frame.rotation)
                self._still = _rotate(av_frame.to_ndarray(format="rgb24"), rotation)
            except (StopIteration, av.FFmpegError) as e:
                raise DecodeError(f"{self._name} is damaged: the image could not be decoded ({e})") from None
            width, height = stream.width, stream.height
        if rotation in (90, 270):
            width, height = height, width
        self.info = MediaInfo(
            **facts,
            width=width,
            height=height,
            fps=None,
            duration_s=None,
            rotation_deg=rotation,
            is_image=True,
            frame_count=1,
        )
        self.planned_frames = 1

    def _open_video(self, stream: Any, facts: dict[str, Any]) -> None:
        container, policy = self._container, self._policy
        self._check_pixels(stream.codec_context.width, stream.codec_context.height)  # header: nothing decoded yet
        tb = stream.time_base
        duration_s: float | None = None
        if stream.duration is not None and tb is not None:
            duration_s = float(stream.duration * tb)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000  # AV_TIME_BASE
        if duration_s is not None and duration_s > self._max_duration_s:
            raise MediaTooLarge(f"{self._name} lasts {duration_s:,.0f} s; the limit is {self._max_duration_s:,.0f} s")
        fps = float(stream.average_rate) if stream.average_rate else None
        self._clock_fps = fps or (float(stream.guessed_rate) if stream.guessed_rate else _FALLBACK_FPS)
        self._start_s = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        # AVI is constant-rate by design and its decoded pts come out reordered after B-frames
        self._time_from_index = facts["container"] == "avi" and policy.mode is not SampleMode.KEYFRAMES
        self._time_base = tb
        self._duration_s = duration_s

        stream.thread_type = "AUTO"
        if policy.mode is SampleMode.KEYFRAMES:
            stream.codec_context.skip_frame = "NONKEY"
        self._cut_at_s: float | None = None
        decoded = self._decode(stream)
        try:
            first = next(decoded)
        except StopIteration:
            if self._cut_at_s is not None:
                raise DecodeError(f"{self._name} is cut short: no frame could be decoded") from None
            raise UnsupportedMedia(f"{self._name} contains no decodable video frame") from None
        except av.FFmpegError as e:
            raise DecodeError(f"{self._name} is damaged: no frame could be decoded ({e})") from None
        self._decoded = chain([first], decoded)  # the peeked frame is yielded like any other
        self._rotation = _clockwise(first.rotation)
        width, height = first.width, first.height
        if self._rotation in (90, 270):
            width, height = height, width
        frame_count = stream.frames or None
        self.info = MediaInfo(
            **facts,
            width=width,
            height=height,
            fps=fps,
            duration_s=duration_s,
            rotation_deg=self._rotation,
            is_image=False,
            frame_count=frame_count,
        )
        self.planned_frames = self._plan(fps, duration_s, frame_count)

    def _decode(self, stream: Any) -> Iterator[Any]:
        """Decoded av.VideoFrames in presentation order. Stops at the first packet the demuxer flags
        corrupt (a cut file): frame-threaded decoders would swallow the error and decode garbage."""
        for packet in self._container.demux(stream):
            if packet.is_corrupt:
                pts = packet.pts if packet.pts is not None else packet.dts
                self._cut_at_s = float(pts * stream.time_base) - self._start_s if pts is not None else 0.0
                yield from stream.decode(None)  # flush the frames still inside the decoder
                return
            yield from stream.decode(packet)  # demux ends with an empty packet, which flushes

    def _count_targets(self, duration_s: float) -> list[float]:
        n = self._policy.count
        return [(i + 0.5) * duration_s / n for i in range(n)]

    def _plan(self, fps: float | None, duration_s: float | None, frame_count: int | None) -> int | None:
        """Frames the policy will yield on a constant-rate stream; None when that cannot be known."""
        policy = self._policy
        n = frame_count or (round(duration_s * fps) if duration_s and fps else None)
        planned: int | None = None
        if policy.mode is SampleMode.ALL:
            planned = n
        elif policy.mode is SampleMode.EVERY_S and n and fps:
            last_s = (n - 1) / fps
            planned = n if policy.every_s * fps < 1 else math.floor(last_s / policy.every_s + _EPS_S) + 1
        elif policy.mode is SampleMode.COUNT and duration_s:
            if n and fps:
                picks = {min(n - 1, math.ceil(t * fps - _EPS_S)) for t in self._count_targets(duration_s)}
                planned = len(picks)
            else:
                planned = policy.count
        if planned is not None and policy.max_frames is not None:
            planned = min(planned, policy.max_frames)
        return planned

    def frames(self) -> Iterator[Frame]:
        """The sampled frames in increasing ``index``: H×W×3 uint8 RGB, rotation applied, ``time_s`` in
        seconds from the stream start. COUNT without a known duration takes one frame every ``every_s``
        seconds, at most ``count``. Raises DecodeError (after the good frames) when the file breaks or
        is cut mid-stream, MediaTooLarge when decoding runs past ``max_duration_s``.
        """
        if self._gen is not None:
            raise RuntimeError("MediaReader.frames() can be called only once")
        self._gen = self._still_frames() if self.info.is_image else self._video_frames()
        return self._gen

    def _decode_pil(self, im: Image.Image) -> np.ndarray:
        """The whole still, EXIF orientation applied: H×W×3 uint8 RGB. Raises MediaTooLarge or DecodeError."""
        try:
            return _pil_to_rgb(ImageOps.exif_transpose(im))
        except Image.DecompressionBombError as e:
            raise MediaTooLarge(f"{self._name} is too large to decode safely: {e}") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise DecodeError(f"{self._name} is damaged or truncated: {e}") from None

    def _still_frames(self) -> Iterator[Frame]:
        assert self._still is not None
        yield Frame(index=0, time_s=0.0, image=self._still)

    def _time_s(self, av_frame: Any, index: int) -> float:
        """Seconds since stream start: pts first, else index / fps (VFR-safe when pts exist)."""
        if not self._time_from_index:
            t = av_frame.time
            # frames flushed by decode(None) carry no time_base, and their .time is NaN
            if (t is None or math.isnan(t)) and av_frame.pts is not None and self._time_base is not None:
                t = float(av_frame.pts * self._time_base)
            if t is not None:
                return float(t) - self._start_s
        return index / self._clock_fps

    def _video_frames(self) -> Iterator[Frame]:
        policy, mode = self._policy, self._policy.mode
        cap = policy.max_frames
        schedule: _Schedule | None = None
        if mode is SampleMode.EVERY_S:
            schedule = _Schedule(step_s=policy.every_s)
        elif mode is SampleMode.COUNT and self._duration_s:
            schedule = _Schedule(targets_s=self._count_targets(self._duration_s))
        elif mode is SampleMode.COUNT:
            # unknown duration: one frame every every_s seconds, at most `count` of them
            schedule = _Schedule(step_s=policy.every_s)
            cap = min(cap, policy.count) if cap is not None else policy.count
        yielded, last_index, last_time_s = 0, -1, 0.0
        last: tuple[Any, int, float] | None = None  # newest decoded frame not yielded (COUNT's tail)
        assert self._decoded is not None
        try:
            for ordinal, av_frame in enumerate(self._decoded):
                if av_frame.is_corrupt:
                    continue  # concealed decode errors: artefacts a forensic model must not see
                time_s = max(self._time_s(av_frame, ordinal), last_time_s, 0.0)
                if time_s > self._max_duration_s:  # headers can lie, or say nothing
                    raise MediaTooLarge(
                        f"{self._name} runs past the {self._max_duration_s:,.0f} s limit (stopped at {time_s:,.0f} s)"
                    )
                last_time_s = time_s
                index = ordinal
                if mode is SampleMode.KEYFRAMES:
                    # only keyframes leave the decoder, so the ordinal is not the stream position
                    index = max(last_index + 1, round(time_s * self._clock_fps))
                if schedule is not None and not schedule.take(time_s):
                    last = (av_frame, index, time_s)
                    continue
                last = None
                yield self._to_frame(av_frame, index, time_s)
                yielded, last_index = yielded + 1, index
                if cap is not None and yielded >= cap:
                    return
            if mode is SampleMode.COUNT and schedule is not None and schedule.next_s is not None and last:
                # targets past the last frame (duration overstated by the container): take the last one
                yield self._to_frame(*last)
                yielded += 1
        except av.FFmpegError as e:
            raise DecodeError(
                f"{self._name} is damaged: decoding stopped after {last_time_s:.2f} s "
                f"({yielded} sampled frames kept): {e.strerror or e}",
                frames_decoded=yielded,
                last_time_s=last_time_s,
            ) from None
        if self._cut_at_s is not None:
            raise DecodeError(
                f"{self._name} is cut short: its data ends at {self._cut_at_s:.2f} s ({yielded} sampled frames kept)",
                frames_decoded=yielded,
                last_time_s=last_time_s,
            )

    def _to_frame(self, av_frame: Any, index: int, time_s: float) -> Frame:
        image = av_frame.to_ndarray(format="rgb24")  # only sampled frames pay for the conversion
        return Frame(index=index, time_s=time_s, image=_rotate(image, self._rotation))


def open_media(
    path: str | Path,
    policy: SamplingPolicy,
    *,
    max_duration_s: float = 3 * 3600,
    max_image_pixels: int = 50_000_000,
) -> MediaReader:
    """Open a video or image for sampling. Raises a MediaError subclass naming the file on bad input."""
    return MediaReader(Path(path), policy, max_duration_s, max_image_pixels)
