"""The one PyAV encoder: what it writes decodes back, and a failed encode leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.encode import encode_video


def test_frames_decode_back_at_the_given_rate(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    path = encode_video(tmp_path / "grey.mp4", frames, fps=10, options={"preset": "ultrafast"}, gop=2)
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert c.streams.video[0].average_rate == 10
    assert len(decoded) == 5 and decoded[0].shape == (48, 64, 3)
    assert abs(int(decoded[3].mean()) - 120) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.mp4"]


def test_a_failed_encode_leaves_no_file(tmp_path: Path) -> None:
    def frames():
        yield np.zeros((48, 64, 3), np.uint8)
        raise RuntimeError("the frame source broke")

    with pytest.raises(RuntimeError, match="broke"):
        encode_video(tmp_path / "broken.mp4", frames(), fps=10)
    assert list(tmp_path.iterdir()) == []


def test_an_av1_encode_leaves_the_callers_scheduling_as_it_was(tmp_path) -> None:
    """SVT-AV1 run as root switches the calling thread to SCHED_FIFO 99 (pipeline/encode.py)."""
    import os

    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV build has no libsvtav1")
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(5)]
    encode_video(tmp_path / "clip.mkv", frames, fps=10, codec="libsvtav1", options={"preset": "12"})
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
