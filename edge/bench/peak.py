"""This machine's measured MatMul peak (fp32 and int8) through onnxruntime, without ``onnx``.

The reference point for "how close to the hardware limit" is a large square MatMul run by the
same onnxruntime build with the same thread count as the model: ``MatMul`` (fp32) and
``MatMulInteger`` (uint8 x int8 -> int32, the kernel family int8 convolutions use). The right
operand is an initializer, so onnxruntime pre-packs it as it does model weights.

The one-node models are written as protobuf bytes by :mod:`edge.onnx_bytes` (``edge`` must not
import the ``onnx`` package).
"""

from __future__ import annotations

import time

import numpy as np

from edge.onnx_bytes import matmul_model

__all__ = ["matmul_model", "matmul_peak"]


def matmul_peak(
    precision: str, threads: int, n: int = 2048, runs: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Measured (n x n) @ (n x n) throughput of this onnxruntime build.

    Args:
        precision: ``"fp32"`` or ``"int8"``.
        threads: onnxruntime intra-op threads (use the model's).
        n: Matrix size; 2048 keeps the operands out of L2 on small boards too.
        runs: Timed runs; the best one counts (the peak, not the typical rate).
        warmup: Untimed runs.

    Returns:
        ``{"n", "gops" (2 n^3 / best time, in 1e9 op/s), "best_ms", "median_ms"}``.
    """
    from edge.session import create_session

    session = create_session(matmul_model(n, precision), threads=threads)
    rng = np.random.default_rng(1)
    if precision == "fp32":
        a = rng.standard_normal((n, n)).astype(np.float32)
    else:
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    for _ in range(warmup):
        session.run(None, {"A": a})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {"A": a})
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "n": n,
        "gops": 2 * n**3 / best / 1e9,
        "best_ms": best * 1e3,
        "median_ms": float(np.median(times)) * 1e3,
    }
