"""``python -m bench.ray``'s arithmetic, table and JSON header, on made-up jobs (no server, no Ray: the bench
itself starts five servers, far too slow for a test)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bench.load import Job
from bench.ray import ROW1, ROW23, ROWS, ray_env, rotated
from bench.ray_rows import PHOTOS, SOLO, VIDEOS, Sample, all_good, summarise, table
from bench.report import results_header, results_path

PROBS = ((0, 0, 0.25), (0, 1, 0.5), (1, 0, 0.75))
REFERENCE = {"video": Job(0.5, 2.0, 2, probs=PROBS), "photo": Job(0.3, 0.3, 1, probs=PROBS[:2])}


def _job(first_s: float, done_s: float, frames: int = 2, *, error: str | None = None, shift: float = 0.0) -> Job:
    probs = () if error else tuple((f, k, p + shift) for f, k, p in PROBS)
    return Job(first_s, done_s, frames, error=error, probs=probs)


def test_summaries_take_per_round_figures_then_the_median_over_rounds() -> None:
    samples = [
        Sample("a", VIDEOS, 0, 4.0, (_job(1.0, 3.0), _job(2.0, 4.0))),  # 4 frames in 4 s
        Sample("a", VIDEOS, 1, 2.0, (_job(3.0, 2.0), _job(5.0, 2.0))),  # 4 frames in 2 s
        Sample("a", VIDEOS, 2, 8.0, (_job(1.0, 8.0), _job(1.0, 8.0, shift=1e-3))),  # one report differs
    ]
    (s,) = summarise(samples, REFERENCE)
    assert (s.config, s.workload, s.rounds, s.jobs, s.completed, s.identical) == ("a", VIDEOS, 3, 6, 6, 5)
    assert s.max_prob_diff == pytest.approx(1e-3)
    assert s.per_s == 1.0  # median of 1, 2, 0.5 frames/s
    assert s.first_frame_p50_s == 1.5  # median of the rounds' p50s 1.5, 4, 1
    assert s.first_frame_p95_s == pytest.approx(1.95)  # median of 1.95, 4.9, 1
    assert not all_good([s])


def test_photos_count_photos_failed_jobs_count_as_not_completed_and_keys_must_match() -> None:
    photo = Job(0.3, 0.3, 1, probs=PROBS[:2])
    samples = [
        Sample("b", PHOTOS, 0, 2.0, (photo, photo, photo, _job(0.1, 0.1, 0, error="internal"))),
        Sample("b", SOLO, 0, 2.0, (Job(0.5, 2.0, 2, probs=PROBS[:2]),)),  # a face missing: never identical
    ]
    photos, solo = summarise(samples, REFERENCE)
    assert (photos.workload, photos.jobs, photos.completed, photos.identical) == (PHOTOS, 4, 3, 3)
    assert photos.per_s == 1.5 and photos.done_p50_s == pytest.approx(0.3)  # completed photos ÷ wall
    assert (solo.identical, solo.max_prob_diff) == (0, math.inf)
    assert not all_good([photos]) and not all_good([])


def test_the_table_shows_each_row_side_by_side_with_the_ratio() -> None:
    ok = (_job(1.0, 2.0), _job(1.0, 2.0), _job(1.0, 2.0), _job(1.0, 2.0))
    samples = [Sample("local", SOLO, 0, 2.0, (_job(0.5, 2.0),)), Sample("ray", SOLO, 0, 2.0, (_job(1.0, 2.0),))]
    samples += [Sample(name, VIDEOS, 0, 2.0, ok) for name in ("1 actor", "2 actors", "unbatched")]
    summaries = summarise(samples, REFERENCE)
    assert all_good(summaries)
    text = table(ROWS, summaries, "head")
    lines = text.splitlines()
    assert lines[0] == "head"
    assert "3. 8 photos" not in text, "a row whose samples are missing is left out"
    row1 = lines.index(next(line for line in lines if line.lstrip().startswith("1. one job")))
    assert re.search(r"\s+local\s+ray\s+ray ÷ local$", lines[row1])
    assert re.search(r"first frame p50\s+0\.50 s\s+1\.00 s\s+2\.00$", lines[row1 + 1])
    assert re.search(r"reports = solo local \(1e-6\)\s+1/1\s+1/1$", lines[row1 + 3])
    assert any(re.search(r"throughput\s+4\.00 frames/s\s+4\.00 frames/s\s+1\.00$", line) for line in lines)
    assert any(re.search(r"batching\s+on\s+off\s+off ÷ on$", line) for line in lines)


def test_configurations_and_round_order() -> None:
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"] and rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert ROW1["local"] == {"DFF_BACKEND": "local"}
    env = ray_env(2, 1, shared_batches=False)
    assert (env["DFF_RAY_ACTORS"], env["DFF_RAY_ACTOR_CPUS"], env["DFF_RAY_SHARED_BATCHES"]) == ("2", "1", "off")
    assert env["RAY_ADDRESS"] == "local" and "DFF_RAY_ADDRESS" not in env  # a Ray of its own, in the server
    names = {*ROW1, *ROW23}
    assert all(row.a in names and row.b in names for row in ROWS)


def test_results_header_and_path(tmp_path: Path) -> None:
    header = results_header(quick=True)
    assert list(header) == ["schema", "date", "quick", "host", "cpu_count", "loadavg_end"]
    assert header["schema"] == 1 and header["quick"] is True and len(header["loadavg_end"]) == 3
    quick, full = results_path("ray", True, tmp_path), results_path("ray", False)
    assert quick.parent == tmp_path and re.fullmatch(r"\d{4}-\d\d-\d\d-.+-ray-quick\.json", quick.name)
    assert full.parent.name == "results" and full.name == quick.name.replace("-quick", "")
