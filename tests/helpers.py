"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from edge.preprocess import letterbox
from edge.segmenter import Segmenter
from edge.types import Masks


def score_gap_conf(
    seg: Segmenter, image: np.ndarray, target: int, lo_factor: float = 1.0, min_gap: float = 0.0
) -> float:
    """A conf threshold keeping about ``target`` candidates, centred in the widest score gap.

    The gap is searched among candidates ``lo_factor * target .. 2 * target`` (score order), so
    float noise between two pipelines cannot move a candidate across the threshold.
    """
    spec = seg.manifest.input
    tensor, _ = letterbox(image, spec.imgsz, spec.stride, auto=spec.dynamic)
    scores = np.sort(seg.session.run(None, {spec.name: tensor})[0][0, 4])[::-1]
    lo, hi = int(target * lo_factor), min(int(target * 2.0), len(scores) - 1)
    gaps = scores[lo:hi] - scores[lo + 1 : hi + 1]
    k = lo + int(np.argmax(gaps))
    assert gaps.max() > min_gap, "no usable score gap"
    return float((scores[k] + scores[k + 1]) / 2)


def mask_key(m: Masks, i: int) -> tuple:
    """Identity of mask ``i`` of a result (crop position, pixels, score), to map selections."""
    c = m.crops[i]
    return (c.x0, c.y0, c.data.shape, c.data.tobytes(), float(m.confidence[i]))


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m edge.cli ARGS`` in a fresh interpreter, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_same_ranges(a: Path, b: Path) -> None:
    """Two onnxruntime calibration caches hold the same method, tensors and numbers."""
    from onnxruntime.quantization import load_tensors_data

    ra, rb = load_tensors_data(a), load_tensors_data(b)
    assert ra.calibration_method == rb.calibration_method
    assert set(ra.keys()) == set(rb.keys()) and len(ra.keys()) > 100
    for name in ra.keys():
        da, db = ra[name].to_dict(), rb[name].to_dict()
        assert da.keys() == db.keys(), name
        for key in da.keys() - {"CLS"}:
            np.testing.assert_array_equal(da[key], db[key], err_msg=f"{name}.{key}")
