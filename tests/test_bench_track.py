"""edge.bench.track and edge.bench.stream: the tracking bench's report, on tiny runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.bench.stream import read_number, run_stream_latency, stamp_number
from edge.bench.track import run_track_bench, synthetic_masks, track_markdown
from edge.cli import main
from edge.cliargs import EXIT_BAD_INPUT


def test_track_bench_report(demo_bundle):
    report = run_track_bench(str(demo_bundle), [1_000_000], 6, (320, 240), 20, "fp32", 1)
    (row,) = report["rows"]
    assert row["frames"] == 6 and row["objects"] >= 3
    assert 0.0 <= row["id_consistency"] <= 1.0 and row["id_switches"] >= 0
    assert row["detected_frames"] <= row["visible_frames"]
    cost = row["cost"]
    assert 0 < cost["masks_mean"] <= 20 and cost["segment_ms"] > 0 and cost["track_ms"] > 0
    syn = report["total"]["synthetic"]
    assert syn["masks"] == 20 and syn["track_ms"] > 0
    text = track_markdown(report)
    assert "id consistency" in text and "synthetic | 20" in text


def test_synthetic_masks_count_and_motion():
    a, b = synthetic_masks((160, 120), 30, 0), synthetic_masks((160, 120), 30, 3)
    assert len(a) == len(b) == 30 and a.image_hw == (120, 160)
    assert not np.array_equal(a.xyxy, b.xyxy)


@pytest.mark.parametrize("n", [0, 1, 12345, 65535])
def test_frame_numbers_survive_jpeg(n):
    import cv2

    img = stamp_number(np.full((240, 320, 3), 90, np.uint8), n)
    ok, jpeg = cv2.imencode(".jpg", img)
    assert ok and read_number(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == n


def test_stream_latency_through_the_service(demo_bundle):
    report = run_stream_latency(str(demo_bundle), [5.0], 1.5, camera_fps=20.0, threads=1)
    (row,) = report["rows"]
    assert row["results"] >= 1 and math.isfinite(row["p50_ms"]) and row["p50_ms"] > 0


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--track-sequence", "x"], "track-sequence"),
        (["--track-sequence", "1", "--track-frames", "1"], "track-frames"),
        (["--track-sequence", "1", "--sizes", "big"], "sizes"),
    ],
)
def test_track_bench_arguments_name_the_flag(args, key, tmp_path, capsys):
    assert main(["bench", *args, "--out", str(tmp_path / "b")]) == EXIT_BAD_INPUT
    assert key in capsys.readouterr().err
