"""edge.bench.peak and edge.opcount: the hand-written MatMul models and the op count."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bench.peak import matmul_model, matmul_peak
from edge.onnx_bytes import matmul_int8_weights, qdq_conv_model
from edge.opcount import node_ops, profile_model, summarize_profile
from edge.session import create_session


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_matmul_model_computes_a_times_b(precision):
    n = 16
    session = create_session(matmul_model(n, precision, seed=3), threads=1)
    rng = np.random.default_rng(3)
    if precision == "fp32":
        b = rng.standard_normal((n, n)).astype(np.float32)
        a = np.random.default_rng(9).standard_normal((n, n)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"A": a})[0], a @ b, rtol=1e-5, atol=1e-4)
    else:
        b = matmul_int8_weights(n, seed=3)
        a = np.random.default_rng(9).integers(0, 256, (n, n), dtype=np.uint8)
        out = session.run(None, {"A": a})[0]
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, a.astype(np.int32) @ b.astype(np.int32))


@pytest.mark.export
def test_matmul_model_is_valid_onnx():
    import onnx

    for precision in ("fp32", "int8"):
        onnx.checker.check_model(
            onnx.load_from_string(matmul_model(8, precision)), full_check=True
        )
    w = np.ones((2, 3, 3, 3), np.int8)
    conv = qdq_conv_model(w, np.full(2, 0.1, np.float32), 0.02, 0, 0.5, 128, (5, 5))
    onnx.checker.check_model(onnx.load_from_string(conv), full_check=True)


def test_matmul_model_rejects_wrong_b():
    with pytest.raises(ValueError, match="b: expected"):
        matmul_model(4, "int8", b=np.zeros((4, 4), np.float32))


def test_matmul_model_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        matmul_model(8, "fp16")


def test_matmul_peak_reports_rate():
    res = matmul_peak("fp32", threads=1, n=256, runs=2)
    assert res["n"] == 256 and res["best_ms"] <= res["median_ms"]
    assert res["gops"] == pytest.approx(2 * 256**3 / (res["best_ms"] / 1e3) / 1e9)


@pytest.mark.parametrize(
    ("op", "inputs", "outputs", "expected"),
    [
        (
            "Conv",
            [[1, 16, 80, 80], [32, 16, 3, 3], [32]],
            [[1, 32, 40, 40]],
            2 * 32 * 40 * 40 * 144,
        ),
        ("FusedConv", [[1, 8, 4, 4], [8, 1, 3, 3]], [[1, 8, 4, 4]], 2 * 8 * 16 * 9),  # depthwise
        ("ConvTranspose", [[1, 4, 5, 5], [4, 6, 2, 2]], [[1, 6, 10, 10]], 2 * 100 * 24),
        ("ConvTranspose", [[1, 4, 5, 5], [6]], [[1, 6, 10, 10]], 2 * 600 * 4),  # packed weight
        ("MatMul", [[2, 50, 64], [64, 32]], [[2, 50, 32]], 2 * 3200 * 64),
        ("Gemm", [[8, 16], [16, 4]], [[8, 4]], 2 * 32 * 16),
        ("Sigmoid", [[1, 8, 4, 4]], [[1, 8, 4, 4]], 0),
    ],
)
def test_node_ops(op, inputs, outputs, expected):
    assert node_ops(op, inputs, outputs) == expected


def test_summarize_profile_per_run():
    def ev(op, dur, ins, outs):
        return {"cat": "Node", "name": f"n_{op}_kernel_time", "dur": dur,
                "args": {"op_name": op, "input_type_shape": [{"float": s} for s in ins],
                         "output_type_shape": [{"float": s} for s in outs]}}  # fmt: skip

    conv = ev("Conv", 3000, [[1, 1, 2, 2], [1, 1, 1, 1]], [[1, 1, 2, 2]])
    sig = ev("Sigmoid", 1000, [[1, 1, 2, 2]], [[1, 1, 2, 2]])
    events = [conv, sig, conv, sig, {"cat": "Session", "name": "model_run", "dur": 9}]
    s = summarize_profile(events, runs=2)
    assert s["gop"] == pytest.approx(8 / 1e9)
    assert s["ms_by_type"] == {"Conv": 3.0, "Sigmoid": 1.0} and s["nodes"] == 2


def test_profile_demo_detector_ops(demo_bundle):
    fp32 = profile_model(demo_bundle / "fastsam.fp32.onnx", (1, 3, 320, 320), threads=1, runs=1)
    # YOLOv8n-seg (nc=1) at 320: ultralytics' thop count is 2.9 GFLOPs (incl. non-conv ops)
    assert 2.6 < fp32["gop"] < 3.0
    assert set(fp32["ops_by_type"]) >= {"Conv", "ConvTranspose"}
    int8 = profile_model(demo_bundle / "fastsam.int8.onnx", (1, 3, 320, 320), threads=1, runs=1)
    assert "QLinearConv" in int8["ms_by_type"]
