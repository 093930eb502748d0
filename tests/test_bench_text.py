"""``edge.bench.text``: the text-prompt cost rows of ``fastsam-edge bench --text-cost`` (the
demo bundle: tiny CLIP, so the run is quick; the text tower needs the ``text`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.bench.text import text_agreement, text_markdown, time_text
from edge.errors import BundleError

export = pytest.mark.export


def _report(text_x: float, second_x: float) -> dict:
    return {
        "time": {
            "bundle": "b", "clip": "MobileCLIP2-S0", "clip_precision": "int8", "dense": True,
            "masks": 99, "threads": 2, "runs": 5, "peak_rss_mib": 333.0,
            "ms": {"everything": 100.0, "text": 100.0 * text_x, "second_word": 100.0 * second_x},
            "x_everything": {"everything": 1.0, "text": text_x, "second_word": second_x},
        },
        "agreement": {"bundle": "d", "clip": "c", "prefilter": "dense", "exact": 0.96,
                      "texts": 50, "scenes": 3, "masks_per_frame": 20.0},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text_x", "second_x", "text_verdict", "second_verdict"),
    [(2.5, 0.2, "met", "met"), (3.5, 0.4, "missed", "missed"), (3.0, 0.3, "met", "met")],
)
def test_markdown_rows_and_verdicts(
    text_x: float, second_x: float, text_verdict: str, second_verdict: str
) -> None:
    md = text_markdown(_report(text_x, second_x))
    assert f"| {text_x:.2f} | <= 3x: {text_verdict} | 333 MiB |" in md
    assert f"| {second_x:.2f} | <= 0.3x: {second_verdict} |" in md
    assert "**0.960** over 50 texts" in md
    report = _report(text_x, second_x)
    del report["agreement"]
    assert "Agreement" not in text_markdown(report)


def test_refuses_a_bundle_without_clip(detector_only_bundle: Path) -> None:
    with pytest.raises(BundleError, match="no CLIP"):
        time_text(str(detector_only_bundle), np.zeros((64, 64, 3), np.uint8), 0.4, "int8", 1, 1)


@export
def test_time_and_agreement_on_the_demo_bundle(demo_bundle: Path) -> None:
    pytest.importorskip("ftfy")
    from edge.demo.scenes import generate_scene

    image = generate_scene(1_700_000, 320, 240).image
    t = time_text(str(demo_bundle), image, 0.4, "int8", 1, runs=1, warmup=0)
    assert t["masks"] > 0 and t["clip_precision"] == "int8" and not t["dense"]
    assert set(t["ms"]) == {"everything", "text", "second_word", "second_word_seen"}
    assert all(v > 0 for v in t["ms"].values()) and t["x_everything"]["everything"] == 1.0
    assert t["peak_rss_mib"] > 50
    json.dumps(t)
    a = text_agreement(str(demo_bundle), scenes=2, threads=1)
    assert a["texts"] > 10 and a["prefilter"] == "score@32" and 0.9 <= a["exact"] <= 1.0
    # no detections: nothing to agree on, no error
    empty = time_text(str(demo_bundle), np.zeros((240, 320, 3), np.uint8), 0.99, "int8", 1, 1, 0)
    assert empty["masks"] == 0


@export
def test_bench_cli_writes_text_report(demo_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("ftfy")
    from edge.cli import main

    out = tmp_path / "out"
    argv = ["bench", "--text-cost", "--bundle", str(demo_bundle), "--runs", "1", "--threads",
            "1", "--precision", "int8", "--sizes", "320x240", "--masks", "10",
            "--text-scenes", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "text.json").read_text())
    assert report["target_masks"] == 10 and "agreement" in report
    assert "second word, same frame" in (out / "text.md").read_text()
