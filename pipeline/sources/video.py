"""The video-file source: PyAV decode -> sampled Frames, per a SamplingPolicy (the schedule lives here)."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from itertools import chain
from typing import Any

import av

from pipeline.errors import DecodeError, MediaTooLarge, UnsupportedMedia
from pipeline.sources.base import Source
from pipeline.sources.probe import check_pixels
from pipeline.sources.rotation import clockwise, rotate
from pipeline.types import Frame, MediaInfo, SampleMode, SamplingPolicy

_EPS_S = 1e-6  # pts * time_base and k * every_s differ in the last float bits
_FALLBACK_FPS = 25.0  # FFmpeg's own guess when a stream states no rate at all


class Schedule:
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


def count_targets(duration_s: float, count: int) -> list[float]:
    """COUNT mode's targets: the middles of ``count`` equal slices of ``duration_s`` seconds."""
    return [(i + 0.5) * duration_s / count for i in range(count)]


def plan_frames(
    policy: SamplingPolicy, fps: float | None, duration_s: float | None, frame_count: int | None
) -> int | None:
    """Frames ``policy`` will yield on a constant-rate stream; None when that cannot be known."""
    n = frame_count or (round(duration_s * fps) if duration_s and fps else None)
    planned: int | None = None
    if policy.mode is SampleMode.ALL:
        planned = n
    elif policy.mode is SampleMode.EVERY_S and n and fps:
        last_s = (n - 1) / fps
        planned = n if policy.every_s * fps < 1 else math.floor(last_s / policy.every_s + _EPS_S) + 1
    elif policy.mode is SampleMode.COUNT and duration_s:
        if n and fps:
            picks = {min(n - 1, math.ceil(t * fps - _EPS_S)) for t in count_targets(duration_s, policy.count)}
            planned = len(picks)
        else:
            planned = policy.count
    if planned is not None and policy.max_frames is not None:
        planned = min(planned, policy.max_frames)
    return planned


class VideoSource(Source):
    """An open video file. Made by ``open_media``, which hands over ``container`` (closed by ``close()``).

    The first frame is decoded at open (for its rotation, and so a file with no decodable frame is an
    error before anything is analysed); ``frames()`` yields it like any other.
    """

    def __init__(
        self,
        container: Any,
        stream: Any,
        facts: dict[str, Any],
        policy: SamplingPolicy,
        *,
        max_duration_s: float,
        max_pixels: int,
    ) -> None:
        self._container: Any = container
        self._name = name = facts["name"]
        self.policy = policy
        self._max_duration_s = max_duration_s
        self._gen: Generator[Frame, None, None] | None = None
        check_pixels(name, stream.codec_context.width, stream.codec_context.height, max_pixels)  # header only
        tb = stream.time_base
        duration_s: float | None = None
        if stream.duration is not None and tb is not None:
            duration_s = float(stream.duration * tb)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000  # AV_TIME_BASE
        if duration_s is not None and duration_s > max_duration_s:
            raise MediaTooLarge(f"{name} lasts {duration_s:,.0f} s; the limit is {max_duration_s:,.0f} s")
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
                raise DecodeError(f"{name} is cut short: no frame could be decoded") from None
            raise UnsupportedMedia(f"{name} contains no decodable video frame") from None
        except av.FFmpegError as e:
            raise DecodeError(f"{name} is damaged: no frame could be decoded ({e})") from None
        self._decoded: Iterator[Any] | None = chain([first], decoded)  # the peeked frame is yielded like any other
        self._rotation = clockwise(first.rotation)
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
        self.planned_frames = plan_frames(policy, fps, duration_s, frame_count)

    def close(self) -> None:
        """Stop a running ``frames()`` and release the container; safe to call twice."""
        if self._gen is not None:
            self._gen.close()  # never resume decoding on a closed container
        if self._container is not None:
            self._container.close()
            self._container = None
        self._decoded = None

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

    def frames(self) -> Iterator[Frame]:
        """The sampled frames in increasing ``index``: H×W×3 uint8 RGB, rotation applied, ``time_s`` in
        seconds from the stream start. COUNT without a known duration takes one frame every ``every_s``
        seconds, at most ``count``. Raises DecodeError (after the good frames) when the file breaks or
        is cut mid-stream, MediaTooLarge when decoding runs past ``max_duration_s``.
        """
        if self._gen is not None:
            raise RuntimeError("VideoSource.frames() can be called only once")
        self._gen = self._frames()
        return self._gen

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

    def _schedule(self) -> tuple[Schedule | None, int | None]:
        """The policy's schedule (None = every frame) and frame cap."""
        policy, mode, cap = self.policy, self.policy.mode, self.policy.max_frames
        if mode is SampleMode.EVERY_S:
            return Schedule(step_s=policy.every_s), cap
        if mode is SampleMode.COUNT and self._duration_s:
            return Schedule(targets_s=count_targets(self._duration_s, policy.count)), cap
        if mode is SampleMode.COUNT:
            # unknown duration: one frame every every_s seconds, at most `count` of them
            return Schedule(step_s=policy.every_s), min(cap, policy.count) if cap is not None else policy.count
        return None, cap

    def _frames(self) -> Iterator[Frame]:
        mode = self.policy.mode
        schedule, cap = self._schedule()
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
        return Frame(index=index, time_s=time_s, image=rotate(image, self._rotation))
