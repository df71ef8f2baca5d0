"""bench/live_memory.py: a short run's shape (the 2-hour figure itself is the bench's, not a test's)."""

from __future__ import annotations

import json

import pytest

from bench.live_memory import run
from pipeline.config import Settings
from pipeline.models import build_model, save_checkpoint

pytestmark = pytest.mark.timeout(300)


def test_a_short_live_memory_run_analyses_every_frame_and_samples_rss(tmp_path) -> None:
    save_checkpoint(build_model(), tmp_path / "random.pth")
    settings = Settings(data_dir=tmp_path / "data", device="cpu", checkpoint=tmp_path / "random.pth")
    rows = tmp_path / "rows.jsonl"
    result = run(120 / 3600, 0.5, settings, rows, log=lambda line: None, warm_s=60.0, step_s=90.0)
    lines = rows.read_text().splitlines()
    assert result.frames == len(lines) == 60, "lock step: every pushed frame was analysed, none dropped"
    assert result.faces == sum(len(json.loads(line)["faces"]) for line in lines) > result.frames
    assert result.people >= 3, "a person left and a new one came (every 90 s)"
    assert (
        [round(m, 1) for m, _ in result.curve_mib] == [1.0, 1.5, 2.0]
        and result.rss_warm_mib > 0
        and result.rss_end_mib > 0
    )
    assert result.ratio == pytest.approx(result.rss_end_mib / result.rss_warm_mib)
