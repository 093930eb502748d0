"""Small ONNX models written as protobuf bytes, without the ``onnx`` package.

``edge`` must not import ``onnx``, yet it needs a few one-node models of its own: the MatMul peak
of ``fastsam-edge bench`` and the integer-kernel probe of :mod:`edge.cpu`. This module is a
minimal ``ModelProto`` encoder (only the fields those models use; field numbers from
``onnx.proto``) and the models themselves. ``tests/test_bench_ops.py`` checks the bytes with
``onnx.checker`` where the export extra is installed.
"""

from __future__ import annotations

import numpy as np

# onnx.TensorProto.DataType
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
_ATTR_INT, _ATTR_INTS = 2, 7  # onnx.AttributeProto.AttributeType
IR_VERSION = 8
OPSET = 17


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


_ELEM_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8,
               np.dtype(np.int8): INT8, np.dtype(np.int32): INT32}  # fmt: skip


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.asarray(array)
    dims = b"".join(_field_varint(1, d) for d in array.shape)  # TensorProto.dims
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return (
        dims
        + _field_varint(2, _ELEM_TYPES[array.dtype])
        + _field_bytes(8, name)
        + _field_bytes(9, raw)
    )


def _attribute_int(name: str, value: int) -> bytes:
    return _field_bytes(1, name) + _field_varint(3, value) + _field_varint(20, _ATTR_INT)


def _attribute_ints(name: str, values: tuple[int, ...]) -> bytes:
    body = b"".join(_field_varint(8, v) for v in values)
    return _field_bytes(1, name) + body + _field_varint(20, _ATTR_INTS)


def _node(
    op: str, inputs: list[str], outputs: list[str], name: str, attributes: tuple[bytes, ...] = ()
) -> bytes:
    return (
        b"".join(_field_bytes(1, i) for i in inputs)
        + b"".join(_field_bytes(2, o) for o in outputs)
        + _field_bytes(3, name)
        + _field_bytes(4, op)
        + b"".join(_field_bytes(5, a) for a in attributes)
    )


def _model(
    name: str,
    nodes: list[bytes],
    initializers: dict[str, np.ndarray],
    inputs: list[tuple[str, int, tuple[int, ...]]],
    outputs: list[tuple[str, int, tuple[int, ...]]],
) -> bytes:
    graph = (
        b"".join(_field_bytes(1, n) for n in nodes)
        + _field_bytes(2, name)
        + b"".join(_field_bytes(5, _tensor(k, v)) for k, v in initializers.items())
        + b"".join(_field_bytes(11, _value_info(*i)) for i in inputs)
        + b"".join(_field_bytes(12, _value_info(*o)) for o in outputs)
    )
    opset = _field_bytes(1, "") + _field_varint(2, OPSET)
    return (
        _field_varint(1, IR_VERSION)
        + _field_bytes(2, "fastsam-edge")
        + _field_bytes(7, graph)
        + _field_bytes(8, opset)
    )


def matmul_int8_weights(n: int, seed: int = 0, full_range: bool = False) -> np.ndarray:
    """The constant int8 B of :func:`matmul_model`.

    By default B stays in [-63, 63] (7 bits, onnxruntime's ``reduce_range``): every u8 x s8 pair
    sum then fits in int16, so the product is exact on every CPU, including x86 without VNNI,
    whose ``VPMADDUBSW`` kernels saturate 16-bit pair sums. Speed does not depend on the values.
    ``full_range`` draws from [-128, 127] (what the saturation probe needs).
    """
    rng = np.random.default_rng(seed)
    low, high = (-128, 128) if full_range else (-63, 64)
    return rng.integers(low, high, (n, n), dtype=np.int8)


def matmul_model(n: int, precision: str, seed: int = 0, b: np.ndarray | None = None) -> bytes:
    """A one-node ONNX model computing ``A @ B`` for an (n, n) input A and a constant (n, n) B.

    Args:
        n: Matrix size.
        precision: ``"fp32"`` (``MatMul``, float32) or ``"int8"`` (``MatMulInteger``, uint8 A,
            int8 B, int32 output).
        seed: Seed of B's values (fp32: standard normal; int8: :func:`matmul_int8_weights`).
        b: Explicit (n, n) B (float32 or int8, matching ``precision``) instead of the seeded one.

    Returns:
        Serialized ``ModelProto`` bytes for ``onnxruntime.InferenceSession``.
    """
    if precision == "fp32":
        a_type, out_type, op = FLOAT, FLOAT, "MatMul"
        default = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
        want = np.float32
    elif precision == "int8":
        a_type, out_type, op = UINT8, INT32, "MatMulInteger"
        default, want = matmul_int8_weights(n, seed), np.int8
    else:
        raise ValueError(f"precision: expected 'fp32' or 'int8', got {precision!r}")
    b = default if b is None else np.asarray(b)
    if b.shape != (n, n) or b.dtype != want:
        raise ValueError(f"b: expected ({n}, {n}) {np.dtype(want)}, got {b.shape} {b.dtype}")
    return _model(
        f"matmul_{precision}_{n}",
        [_node(op, ["A", "B"], ["Y"], "matmul")],
        {"B": b},
        [("A", a_type, (n, n))],
        [("Y", out_type, (n, n))],
    )


def qdq_conv_model(
    weight: np.ndarray,
    weight_scale: np.ndarray,
    x_scale: float,
    x_zero_point: int,
    y_scale: float,
    y_zero_point: int,
    input_hw: tuple[int, int],
) -> bytes:
    """A QDQ int8 convolution, the pattern ``fastsam-export`` writes for every detector conv.

    ``X -> QuantizeLinear(u8) -> DequantizeLinear -> Conv(DequantizeLinear(W s8, per channel,
    zero point 0)) -> QuantizeLinear(u8) -> DequantizeLinear -> Y``, no padding, stride 1.
    With graph optimisations on, onnxruntime fuses it into one ``QLinearConv`` (this CPU's
    integer kernels); with them off (``optimization="disable"``) it runs the float ops on
    quantized values: the CPU-independent reference.

    Args:
        weight: (Cout, Cin, kh, kw) int8 weights.
        weight_scale: (Cout,) float32 per-channel scales.
        x_scale, x_zero_point: Input quantization (uint8).
        y_scale, y_zero_point: Output quantization (uint8).
        input_hw: (H, W) of the float input X, shape (1, Cin, H, W).

    Returns:
        Serialized ``ModelProto`` bytes.
    """
    weight = np.asarray(weight, np.int8)
    cout, cin, kh, kw = weight.shape
    h, w = input_hw
    inits = {
        "W_q": weight,
        "W_scale": np.asarray(weight_scale, np.float32).reshape(cout),
        "W_zp": np.zeros(cout, np.int8),
        "x_scale": np.float32(x_scale).reshape(()),
        "x_zp": np.uint8(x_zero_point).reshape(()),
        "y_scale": np.float32(y_scale).reshape(()),
        "y_zp": np.uint8(y_zero_point).reshape(()),
    }
    nodes = [
        _node("QuantizeLinear", ["X", "x_scale", "x_zp"], ["X_q"], "x_q"),
        _node("DequantizeLinear", ["X_q", "x_scale", "x_zp"], ["X_dq"], "x_dq"),
        _node(
            "DequantizeLinear",
            ["W_q", "W_scale", "W_zp"],
            ["W_dq"],
            "w_dq",
            (_attribute_int("axis", 0),),
        ),  # fmt: skip
        _node(
            "Conv", ["X_dq", "W_dq"], ["C"], "conv", (_attribute_ints("kernel_shape", (kh, kw)),)
        ),  # fmt: skip
        _node("QuantizeLinear", ["C", "y_scale", "y_zp"], ["Y_q"], "y_q"),
        _node("DequantizeLinear", ["Y_q", "y_scale", "y_zp"], ["Y"], "y_dq"),
    ]
    return _model(
        "qdq_conv",
        nodes,
        inits,
        [("X", FLOAT, (1, cin, h, w))],
        [("Y", FLOAT, (1, cout, h - kh + 1, w - kw + 1))],
    )
