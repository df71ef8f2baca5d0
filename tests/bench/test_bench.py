"""Smoke test of the benchmark: the quick bench runs end to end on a tiny clip. Asserts shapes, never speed."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.run as run_module
from bench.__main__ import main
from bench.config import CLIP_QUICK, BenchConfig
from bench.measure import PipelineResult
from bench.media import make_clip, scene_frames
from bench.precision import agreement, describe, summary
from bench.report import Row, Target, format_table, summarise
from bench.suite import run_suite
from pipeline.batching import prefetch, score_with_fast_start
from pipeline.config import Settings
from pipeline.detect import FaceDetector
from pipeline.engine import Engine
from pipeline.errors import DecodeError
from pipeline.run import analyze
from pipeline.sources import open_media_for
from pipeline.types import AnalysisStart, CroppedFrame, FaceBox, FaceScore, Frame, FrameVerdict, Report, SampleMode


def test_quick_bench_runs_and_writes_json(tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = BenchConfig.for_quick(
        cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", naive_frames=1, all_frames=3, log=lines.append
    )
    payload = run_suite(cfg)
    written = json.loads(Path(payload["path"]).read_text())
    assert written["quick"] is True
    assert [t["id"] for t in written["targets"]] == ["P1", "P2", "P3", "P4", "P5"]
    for target in written["targets"]:
        assert target["value"] is not None and target["value"] > 0, target
        assert target["passed"] in (True, False)
    runs = {(s["input"], s["run"]) for s in written["summary"]}
    clip = f"{cfg.clip.name}.mp4"
    for run in ("naive", "pipeline all frames", "pipeline 1/s", "decode + RGB"):
        assert (clip, run) in runs
    naive = next(s for s in written["summary"] if s["run"] == "naive")
    assert naive["frames"] == 1 and naive["faces"] == cfg.clip.n_faces
    pipeline = next(s for s in written["summary"] if s["run"] == "pipeline all frames")
    assert pipeline["frames"] == 3 and pipeline["faces"] == 3 * cfg.clip.n_faces
    text = "\n".join(lines)
    assert "P1" in text and "frames/s" in text
    check = written["precision_check"]
    if written["machine"]["precision"] == "fp32":  # no low-precision trunk here: nothing to compare
        assert check is None
    else:  # the service's precision vs fp32 on the clip, side by side
        assert (clip, "pipeline 1/s, fp32") in runs
        assert check["inputs"] == 1 and check["faces"] >= cfg.clip.n_faces
        assert 0 <= check["max_face_dp"] < 0.05 and check["verdict_flips"] in (0, 1)
        assert "vs fp32" in text


def test_precision_agreement_compares_faces_and_verdicts() -> None:
    ref = PipelineResult(fake_probs=[0.2, 0.7], label="fake", score=0.7)
    low = PipelineResult(fake_probs=[0.21, 0.69], label="inconclusive", score=0.52)
    a = agreement("clip", ref, low)
    assert a.flipped and a.max_face_dp == pytest.approx(0.01) and a.score_dp == pytest.approx(0.18)
    s = summary("bf16", [a, agreement("same", ref, ref)])
    assert s["verdict_flips"] == 1 and s["inputs"] == 2 and s["faces"] == 4
    assert "1 VERDICTS CHANGED" in describe(s)
    with pytest.raises(AssertionError, match="faces"):
        agreement("other faces", ref, PipelineResult(fake_probs=[0.2]))


def test_cli_help_is_instant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_table_and_targets_are_pure() -> None:
    rows = [Row("clip", "naive", r, 10, 30, 10.0 + r, {"detect": 2.0}) for r in range(3)]
    (summary,) = summarise(rows)
    assert summary["fps"] == pytest.approx(10 / 11) and summary["detect_ms"] == pytest.approx(200.0)
    assert "naive" in format_table(rows)
    assert Target("P3", "latency", 1.0, False, (0.5, 2.0, 0.9)).passed is True
    assert Target("P1", "ratio", 5.0, True, ()).passed is None


# -- the pipeline helpers this benchmark's optimisations added (they belong in tests/pipeline) -------------


def _cropped(index: int, n_faces: int) -> CroppedFrame:
    boxes = tuple(FaceBox(index, i, (10.0 * i, 0.0, 10.0 * i + 8, 8.0), 0.99) for i in range(n_faces))
    return CroppedFrame(index, index / 10, boxes, tuple(np.zeros((4, 4, 3), np.uint8) for _ in boxes))


def _fake_score(sizes: list[int]):
    def score(crops, boxes):
        sizes.append(len(crops))
        z = np.zeros((2, 2), np.float32)
        return [FaceScore(box=b, fake_prob=0.5, heatmap=z, embedding=z[0]) for b in boxes]

    return score


@pytest.mark.parametrize(
    ("faces_per_frame", "batch", "pending", "sizes"),
    [
        ([3, 3, 3, 3, 3], 32, 4, [3, 12]),  # first face frame alone, then the latency rule as before
        ([0, 0, 2, 2, 2], 4, 10, [2, 4]),  # zero-face frames before it pass through
        ([5, 1], 2, 10, [2, 2, 1, 1]),  # a big first frame still respects classify_batch
        ([0, 0], 4, 4, []),
        ([], 4, 4, []),
    ],
)
def test_fast_start_scores_the_first_face_frame_alone(faces_per_frame, batch, pending, sizes) -> None:
    got: list[int] = []
    frames = [_cropped(i, n) for i, n in enumerate(faces_per_frame)]
    out = list(score_with_fast_start(frames, _fake_score(got), classify_batch=batch, max_pending_frames=pending))
    assert got == sizes
    assert [f.index for f in out] == list(range(len(faces_per_frame)))
    assert [len(f.scores) for f in out] == faces_per_frame


def test_fast_start_yields_the_first_verdict_before_reading_on() -> None:
    pulled: list[int] = []

    def source():
        for i in range(6):
            pulled.append(i)
            yield _cropped(i, 3)

    gen = score_with_fast_start(source(), _fake_score([]), classify_batch=32, max_pending_frames=4)
    assert next(gen).index == 0 and pulled == [0]


def test_prefetch_keeps_order_and_reraises_after_the_good_items() -> None:
    assert list(prefetch(iter(range(50)), 3)) == list(range(50))

    def breaks():
        yield 1
        yield 2
        raise DecodeError("cut at 0.2 s")

    got = []
    with pytest.raises(DecodeError, match="cut at"):
        for item in prefetch(breaks(), 1):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_close_stops_and_closes_the_source_in_its_thread() -> None:
    events: list[str] = []

    def source():
        try:
            yield from range(1000)
        finally:
            events.append(f"closed in {threading.current_thread().name}")

    gen = prefetch(source(), 2)
    assert next(gen) == 0
    gen.close()  # returns only once the producer thread has closed the source
    assert events == ["closed in dff-prefetch"]
    assert not any(t.name == "dff-prefetch" for t in threading.enumerate())


def test_channels_last_pools_give_identical_detections() -> None:
    scene = next(scene_frames(CLIP_QUICK))
    fast = FaceDetector(torch.device("cpu"))
    plain = FaceDetector(torch.device("cpu"))
    for net in (plain._mtcnn.pnet, plain._mtcnn.rnet, plain._mtcnn.onet):
        for name, child in list(net.named_children()):
            if hasattr(child, "pool"):
                setattr(net, name, child.pool)
    for min_px, max_side in ((40, 640), (20, 4096)):
        a = fast.detect([Frame(0, 0.0, scene)], min_px, max_side)[0]
        b = plain.detect([Frame(0, 0.0, scene)], min_px, max_side)[0]
        assert len(a) == len(b) == CLIP_QUICK.n_faces
        for x, y in zip(a, b, strict=True):
            assert x.xyxy == y.xyxy and x.detector_prob == y.detector_prob
            assert np.array_equal(x.landmarks, y.landmarks)


def test_overlapped_stages_give_the_same_report_and_close_cleanly(tmp_path: Path, monkeypatch) -> None:
    """The accelerator path (decode+detect in a prefetch thread), forced on CPU: same verdicts, clean close."""
    clip = make_clip(CLIP_QUICK, tmp_path)
    settings = Settings(data_dir=tmp_path, device="cpu", sample_mode=SampleMode.ALL, max_frames=6)
    with Engine.open(settings, allow_untrained=True) as engine:
        with open_media_for(clip, settings) as source:
            serial = [e for e in analyze(source, engine, settings) if isinstance(e, Report)][0]
        monkeypatch.setattr(run_module, "_overlap_stages", lambda _engine: True)
        with open_media_for(clip, settings) as source:
            overlapped = [e for e in analyze(source, engine, settings) if isinstance(e, Report)][0]
        with open_media_for(clip, settings) as source:
            events = analyze(source, engine, settings)
            assert isinstance(next(events), AnalysisStart) and isinstance(next(events), FrameVerdict)
            events.close()  # mid-stream: the prefetch thread must stop before the container closes
    assert not any(t.name == "dff-prefetch" for t in threading.enumerate())
    assert [r.faces for r in overlapped.frames] == [r.faces for r in serial.frames]
    assert overlapped.score == serial.score and len(serial.frames) == 6


def test_serve_bench_streams_to_one_and_to_several_clients(tmp_path: Path) -> None:
    """``python -m bench.serve`` against a real ``dff serve`` process: shapes only, never speed."""
    from bench.config import CLIP_QUICK as spec
    from bench.serve import measure
    from bench.weights import calibrated_checkpoint

    clip = make_clip(spec, tmp_path)
    result = measure(clip, calibrated_checkpoint(tmp_path), clients=2, repeats=1, every_s=0.5)
    assert result["clients"] == 2 and len(result["first_frame_s"]) == 1
    assert 0 < result["first_frame_s_median"] < 60 and result["solo_frames_per_s"] > 0
    assert [r["frames"] for r in result["group_runs"]] == [round(spec.seconds / 0.5)] * 2


def test_load_bench_completes_matches_solo_refuses_past_capacity_and_measures_contention(tmp_path: Path) -> None:
    """``python -m bench.load`` against a real ``dff serve`` process: shapes and correctness, never speed."""
    from bench.config import CLIP_QUICK as spec
    from bench.load import measure
    from bench.weights import calibrated_checkpoint

    clip = make_clip(spec, tmp_path)
    r = measure(clip, calibrated_checkpoint(tmp_path), clients=3, extra=2, every_s=0.5, rounds=1, timeout_s=300)
    assert (r.max_jobs, r.max_queue) == (1, 2)
    assert r.completed == r.clients == 3 and r.identical == 3 and r.max_prob_diff <= 1e-6
    assert r.extra_busy == 2 and r.extra_other == []  # past capacity: busy, nothing else
    assert 0 < r.first_frame_p50_s <= r.first_frame_p95_s < 300 and r.total_frames_per_s > 0
    assert len(r.quiet_frames_per_s) == len(r.contended_frames_per_s) == 1
    assert math.isfinite(r.contention_ratio) and r.contention_ratio > 0  # a number; its size is the bench's
    assert r.thread_settings.get("OMP_WAIT_POLICY")  # what the server ran with is recorded
    assert "busy processes ÷ quiet" in r.table()


def test_load_helpers_are_pure() -> None:
    from bench.load import Job, max_prob_difference, percentile

    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 95) == 5.0 and math.isnan(percentile([], 50))
    a = Job(0.1, 1.0, 2, probs=((0, 0, 0.25), (1, 0, 0.5)))
    assert max_prob_difference(a, Job(0.1, 1.0, 2, probs=((0, 0, 0.25), (1, 0, 0.5000004)))) == pytest.approx(4e-7)
    assert max_prob_difference(a, Job(0.1, 1.0, 1, probs=((0, 0, 0.25),))) == math.inf  # other faces


def test_busy_processes_spin_and_are_gone_afterwards() -> None:
    from bench.contention import MATRIX, busy_processes

    with busy_processes(2) as procs:
        assert all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)
    env = MATRIX[1].environ({"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "DFF_TORCH_THREADS": "1"}  # "spin" = the library default: the variable removed
