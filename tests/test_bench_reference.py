"""fastsam-edge bench --compare-reference: ultralytics rows and mask agreement (export extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = pytest.mark.export


def test_compare_reference_rows_and_agreement(tmp_path: Path) -> None:
    from export.archs import make_checkpoint
    from export.fastsam import export_bundle

    pt = make_checkpoint("fastsam-n", tmp_path / "n.pt", seed=3)
    bundle = export_bundle(pt, tmp_path / "b320", imgsz=320, int8=False, measure_memory=False)
    proc = run_cli(
        "bench",
        "--bundle",
        str(bundle),
        "--compare-reference",
        str(pt),
        "--sizes",
        "320x240",
        "--masks",
        "10",
        "--runs",
        "1",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--modes",
        "everything",
        "--no-peak",
        "--out",
        str(tmp_path / "out"),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "bench.json").read_text())
    sides = [r["side"] for r in report["rows"]]
    assert sides == ["edge", "ultralytics-pt", "ultralytics-onnx"]
    for r in report["rows"]:
        assert r["end_to_end_ms"]["p50"] > 0 and r["masks"] > 0
    agree = {(a["edge"], a["reference"]): a for a in report["agreement"]}
    assert set(agree) == {("fp32", "ultralytics-pt"), ("fp32", "ultralytics-onnx")}
    onnx = agree[("fp32", "ultralytics-onnx")]
    # same ONNX file, same letterbox, same conf: the reference's masks (parity tests: >= 0.998)
    assert onnx["edge_masks"] == onnx["reference_masks"]
    assert min(onnx["mean_iou_edge_to_ref"], onnx["mean_iou_ref_to_edge"]) > 0.99
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| 1.0x |" in md and "Mask agreement" in md


def test_compare_reference_count_must_match_bundles(tmp_path: Path, demo_bundle: Path) -> None:
    proc = run_cli(
        "bench",
        "--bundle",
        str(demo_bundle),
        "--bundle",
        str(demo_bundle),
        "--compare-reference",
        "a.pt",
        "--compare-reference",
        "b.pt",
        "--compare-reference",
        "c.pt",
        "--out",
        str(tmp_path),
        timeout=120,
    )
    assert proc.returncode != 0 and "once per --bundle" in proc.stderr
