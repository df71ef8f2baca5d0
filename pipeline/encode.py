"""PyAV encoding of RGB frames: the bundled example clip, the benchmark clip and the tests' media.

The PyAV details live here once: ``yuv420p`` (what every player decodes), explicit pts/time base, the
frame size taken from the first frame, the display matrix for rotation, and an atomic write.

One encoder quirk is fixed here too: SVT-AV1 (``libsvtav1``), run as root, switches the *calling* thread
to SCHED_FIFO priority 99 and leaves it so. Every thread and process started from that thread afterwards
inherits real-time priority; on the development VM two Chromium processes started that way spun at RT
priority and starved the kernel work they waited on, until nothing could be killed. ``encode_video``
puts the caller's scheduling policy back as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@contextmanager
def _keep_scheduling() -> Iterator[None]:
    """Restore the calling thread's scheduling policy and priority afterwards (see the module docstring)."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)


def encode_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int = 30,
    codec: str = "libx264",
    *,
    options: dict[str, str] | None = None,
    pts: Sequence[int] | None = None,
    rotation_deg: int | None = None,
    gop: int | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode H×W×3 uint8 RGB ``frames`` into ``path`` (the container follows its suffix); returns ``path``.

    ``options``: codec options (e.g. ``{"preset": "veryfast", "crf": "23"}``); ``pts`` (in 1/fps units)
    makes variable frame rate clips; ``rotation_deg`` (clockwise, as phones mean it) is written as a real
    display matrix, which decoders read back (a ``rotate`` metadata tag is ignored by FFmpeg 7's mp4
    muxer); ``gop``: keyframe interval in frames; ``container_options`` go to the muxer (e.g.
    ``{"movflags": "faststart"}``). Written under a temporary name first: a failed encode leaves no file.
    """
    tmp = path.with_name(f"{path.stem}.part{path.suffix}")
    try:
        with _keep_scheduling(), av.open(str(tmp), "w", options=container_options or {}) as out:
            stream = out.add_stream(codec, rate=fps, options=options or {})
            stream.pix_fmt = "yuv420p"
            stream.time_base = Fraction(1, fps)
            if gop is not None:
                stream.gop_size = gop
            for i, img in enumerate(frames):
                if i == 0:
                    stream.height, stream.width = img.shape[:2]
                    if rotation_deg:
                        stream.set_display_rotation(-rotation_deg)  # PyAV counts counter-clockwise
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = pts[i] if pts is not None else i
                frame.time_base = Fraction(1, fps)
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path
