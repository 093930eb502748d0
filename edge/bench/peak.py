"""This machine's measured MatMul peak (fp32 and int8) through onnxruntime, without ``onnx``.

The reference point for "how close to the hardware limit" is a large square MatMul run by the
same onnxruntime build with the same thread count as the model: ``MatMul`` (fp32) and
``MatMulInteger`` (uint8 x int8 -> int32, the kernel family int8 convolutions use). The right
operand is an initializer, so onnxruntime pre-packs it as it does model weights.

``edge`` must not import the ``onnx`` package, so the two one-node models are written here as
protobuf bytes by a minimal encoder (only the ModelProto fields needed; field numbers from
``onnx.proto``). ``tests/test_bench_peak.py`` checks the bytes with ``onnx.checker`` where the
export extra is installed.
"""

from __future__ import annotations

import time

import numpy as np

# onnx.TensorProto.DataType
_FLOAT, _UINT8, _INT8, _INT32 = 1, 2, 3, 6
_IR_VERSION = 8
_OPSET = 17


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field_bytes(1, _field_varint(1, d)) for d in shape)  # Dimension.dim_value
    tensor_type = _field_varint(1, elem_type) + _field_bytes(2, dims)  # elem_type, shape
    type_proto = _field_bytes(1, tensor_type)  # TypeProto.tensor_type
    return _field_bytes(1, name) + _field_bytes(2, type_proto)


def _tensor(name: str, array: np.ndarray, elem_type: int) -> bytes:
    dims = b"".join(_field_varint(1, d) for d in array.shape)  # TensorProto.dims
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return dims + _field_varint(2, elem_type) + _field_bytes(8, name) + _field_bytes(9, raw)


def matmul_model(n: int, precision: str, seed: int = 0) -> bytes:
    """A one-node ONNX model computing ``A @ B`` for an (n, n) input A and constant (n, n) B.

    Args:
        n: Matrix size.
        precision: ``"fp32"`` (``MatMul``, float32) or ``"int8"`` (``MatMulInteger``, uint8 A,
            int8 B, int32 output).
        seed: Seed of B's values.

    Returns:
        Serialized ``ModelProto`` bytes for ``onnxruntime.InferenceSession``.
    """
    rng = np.random.default_rng(seed)
    if precision == "fp32":
        a_type, out_type, op = _FLOAT, _FLOAT, "MatMul"
        b = rng.standard_normal((n, n)).astype(np.float32)
        b_type = _FLOAT
    elif precision == "int8":
        a_type, out_type, op = _UINT8, _INT32, "MatMulInteger"
        b = rng.integers(-127, 128, (n, n), dtype=np.int8)
        b_type = _INT8
    else:
        raise ValueError(f"precision: expected 'fp32' or 'int8', got {precision!r}")
    node = _field_bytes(1, "A") + _field_bytes(1, "B") + _field_bytes(2, "Y") + _field_bytes(4, op)
    graph = (
        _field_bytes(1, node)
        + _field_bytes(2, f"matmul_{precision}_{n}")
        + _field_bytes(5, _tensor("B", b, b_type))
        + _field_bytes(11, _value_info("A", a_type, (n, n)))
        + _field_bytes(12, _value_info("Y", out_type, (n, n)))
    )
    opset = _field_bytes(1, "") + _field_varint(2, _OPSET)
    return (
        _field_varint(1, _IR_VERSION)
        + _field_bytes(2, "fastsam-edge")
        + _field_bytes(7, graph)
        + _field_bytes(8, opset)
    )


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
