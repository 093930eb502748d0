"""fastsam-edge bench: report rendering and a tiny end-to-end run on the demo bundle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.bench import draw_plot, peak_rss_mb, to_markdown


def _report() -> dict:
    rows = []
    for side, prec, ms in (
        ("edge", "fp32", 200.0),
        ("edge", "int8", 80.0),
        ("ultralytics-pt", "fp32", 800.0),
    ):
        rows.append(
            {
                "image": "scene0",
                "image_wh": [640, 480],
                "target_masks": 100,
                "conf": 0.5,
                "side": side,
                "precision": prec,
                "masks": 100,
                "end_to_end_ms": ms,
                "stages_ms": {"preprocess": 1.0, "infer": ms - 11.0, "postprocess": 10.0},
                "postprocess_ms_per_mask": 0.1,
                "pre_post_over_model": 11.0 / (ms - 11.0),
                "peak_rss_mb": 150.0,
                "runs": 5,
            }
        )
    return {
        "machine": {"cpu": "test", "onnxruntime": "x"},
        "bundle": {"name": "b", "input": [640, 640]},
        "settings": {"threads": 2, "runs": 5},
        "rows": rows,
    }


def test_markdown_speedups_against_torch_reference() -> None:
    table = to_markdown(_report())
    assert "| edge int8 | 100 |" in table
    assert "| 10.0x |" in table  # 800 / 80
    assert "| 1.0x |" in table


def test_plot_is_an_image_with_bars() -> None:
    img = draw_plot(_report())
    assert img.dtype == np.uint8 and img.ndim == 3
    assert (img != 255).any()


def test_peak_rss_is_positive() -> None:
    assert 10 < peak_rss_mb() < 100_000


def test_bench_cli_on_demo_bundle(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "bench",
            "--sizes",
            "320x240",
            "--masks",
            "5",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    sides = {(r["side"], r["precision"]) for r in report["rows"]}
    assert sides == {("edge", "fp32"), ("edge", "int8")}
    for row in report["rows"]:
        assert row["masks"] >= 1 and row["end_to_end_ms"] > 0 and row["peak_rss_mb"] > 10
    assert (tmp_path / "bench.md").read_text().startswith("Bundle `fastsam-demo-320`")
    assert cv2.imread(str(tmp_path / "bench.png")) is not None
