"""``python -m bench.live`` for a few seconds on the small clip: the row's fields agree with each other and
with the options (counts, ratios, the queue's bound), never with a speed."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from bench.config import CLIP_QUICK
from bench.live import PacedStream, main
from bench.media import make_clip

pytestmark = pytest.mark.timeout(240)


def test_the_paced_stream_plays_the_clip_looped_in_real_time_and_ends_cleanly(tmp_path: Path) -> None:
    clip = make_clip(CLIP_QUICK, tmp_path)
    with PacedStream(clip, seconds=3.0) as served, av.open(served.url) as container:
        times = [f.time for f in container.decode(video=0)]  # ends without an error: a complete body
    assert len(times) == round(3.0 * CLIP_QUICK.fps), "2-s clip looped to 3 s, every frame once"
    assert times == sorted(times) and times[-1] - times[0] == pytest.approx(3.0 - 1 / CLIP_QUICK.fps, abs=0.01)


def _check(run: dict, queue_frames: int) -> None:
    assert run["end"] == "stopped" and run["reconnects"] == 0
    assert run["queue_frames"] == queue_frames
    assert run["frames_analysed"] == run["delivered"] > 0
    # every sampled frame was analysed, dropped, or still waiting in the queue when the session stopped
    assert 0 <= run["sampled"] - run["delivered"] - run["dropped"] <= queue_frames
    assert run["decoded"] >= run["sampled"]
    assert run["faces"] == run["frames_analysed"] * CLIP_QUICK.n_faces, "the 3 faces are found in every frame"
    assert 0 <= run["lag_p50_s"] <= run["lag_p95_s"] <= run["lag_max_s"]
    # the newest-first queue's promise: a frame waits behind at most queue_frames others and the step
    # in progress, then takes its own step
    assert run["lag_bound_s"] == pytest.approx((queue_frames + 2) * run["max_step_s"])
    assert run["lag_p95_s"] <= run["lag_bound_s"]
    assert run["dropped_pct"] == pytest.approx(100 * run["dropped"] / run["sampled"])


def test_the_live_row_on_a_real_stream_with_a_slowed_consumer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "live.json"
    argv = ["--quick", "--seconds", "3", "--cache", str(tmp_path), "--out", str(out), "--queue-frames", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "live 2/s" in printed and "slowed consumer 4/s" in printed and f"wrote {out}" in printed
    payload = json.loads(out.read_text())
    assert payload["quick"] is True and (payload["width"], payload["n_faces"]) == (CLIP_QUICK.width, 3)
    live, slowed = payload["runs"]
    for run in (live, slowed):
        _check(run, 2)
    assert (live["run"], live["rate_hz"], live["slow_s"]) == ("live 2/s", 2.0, 0.0)
    assert (slowed["run"], slowed["rate_hz"], slowed["slow_s"]) == ("slowed consumer 4/s", 4.0, 0.5)
    # the slowed consumer takes at least slow_s per frame, so it analyses at most watched_s / slow_s + 1
    # frames: the rest of what it sampled was dropped (counted) or, at most queue_frames, still waiting
    assert slowed["max_step_s"] >= slowed["slow_s"]
    most = slowed["watched_s"] / slowed["slow_s"] + 1
    assert slowed["delivered"] <= most
    assert slowed["dropped"] >= slowed["sampled"] - most - 2
    assert slowed["dropped"] > 0
