"""This CPU's integer-kernel class: what onnxruntime's int8 kernels compute here, and whether
int8 is expected to pay off.

onnxruntime runs a quantized model (uint8 activations x int8 weights) with different kernels per
CPU, and they do not all compute the same numbers:

* **x86 with VNNI** (``avx512_vnni`` / ``avx_vnni``): ``VPDPBUSD`` accumulates u8 x s8 products
  in int32: exact.
* **x86 with AVX2 only**: ``VPMADDUBSW`` adds pairs of u8 x s8 products into a *saturating*
  int16 (2 x 255 x 127 = 64770 > 32767), so a model with full-range int8 weights computes
  different (wrong) numbers on such a host than on a Pi. fastsam-export therefore decides an
  int8 model's fate on a CPU-independent reference, not on this host's kernels.
* **ARM with dot product** (``asimddp``, Cortex-A76 / Pi 5; ``i8mm`` on newer cores): exact
  int32 dot products, int8 several times faster than fp32.
* **ARM without dot product** (Cortex-A72 / Pi 4, A53 / Pi 3 and Zero 2): exact but widening
  NEON multiplies; int8 is not expected to pay off over fp32 (measure with ``fastsam-edge
  bench``).

The class is named from the CPU flags and, on x86, confirmed by running a 16x16 ``MatMulInteger``
whose exact result needs more than 16 bits per pair (:func:`probe_u8s8_saturation`): the
behaviour of the kernels onnxruntime really dispatches here, which flags cannot tell under an
emulator or a future onnxruntime.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# CPU feature flags that decide which int8/fp32 kernels onnxruntime can use
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512f", "avx2", "asimddp", "i8mm", "sve", "asimd")
_X86 = ("x86_64", "amd64", "i386", "i686")
_ARM = ("aarch64", "arm64", "armv8l", "armv7l")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model name and the int8-relevant feature flags from ``/proc/cpuinfo``.

    Args:
        cpuinfo: The file's text (default: read it).

    Returns:
        ``{"cpu": str, "flags": [...]}``; on a Pi the model comes from the ``Model`` line
        (ARM cpuinfo has no ``model name``), e.g. "Raspberry Pi 5 Model B Rev 1.0".
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip().lower(), value.strip())
    name = (
        fields.get("model name")
        or fields.get("model")
        or fields.get("hardware")
        or fields.get("cpu model")
        or platform.processor()
        or platform.machine()
    )
    part = fields.get("cpu part")
    if part and "model name" not in fields:
        name = f"{name} (CPU part {part})"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"cpu": name, "flags": [f for f in INT8_FLAGS if f in flags]}


@dataclass(frozen=True)
class Int8Class:
    """What int8 means on this CPU.

    Attributes:
        name: ``x86-vnni``, ``x86-avx2`` (saturating u8 x s8 kernels), ``x86``, ``arm-i8mm``,
            ``arm-dotprod``, ``arm-neon`` (no dot product) or ``other``.
        machine: ``platform.machine()``.
        flags: The int8-relevant CPU flags found.
        saturates: Measured: this onnxruntime's u8 x s8 kernels clip pair sums to int16 here
            (``None`` when not probed).
        int8_pays_off: int8 is expected to beat fp32 clearly on this class.
        note: One sentence for ``info``, ``doctor`` and ``bench``.
    """

    name: str
    machine: str
    flags: tuple[str, ...]
    saturates: bool | None
    int8_pays_off: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``bundle.json``, bench reports)."""
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d

    def describe(self) -> str:
        """``"x86-vnni (avx512_vnni, avx2): ..."`` for humans."""
        flags = ", ".join(self.flags) or "no int8 flags"
        return f"{self.name} ({flags}): {self.note}"


def probe_u8s8_saturation() -> bool:
    """Run a 16x16 ``MatMulInteger`` (all 255 x all 127) and report whether it saturates.

    The exact entries are 16 x 255 x 127 = 518160; kernels that add u8 x s8 pairs into a
    saturating int16 give 8 x 32767 = 262136.
    """
    from edge.onnx_bytes import matmul_model
    from edge.session import create_session

    n = 16
    b = np.full((n, n), 127, np.int8)
    session = create_session(matmul_model(n, "int8", b=b), threads=1)
    out = session.run(None, {"A": np.full((n, n), 255, np.uint8)})[0]
    return bool(np.any(out != n * 255 * 127))


def classify(machine: str, flags: set[str] | list[str], saturates: bool | None) -> Int8Class:
    """Name the int8 class from the machine, its flags and (x86) the saturation probe.

    Args:
        machine: ``platform.machine()``.
        flags: CPU feature flags (:func:`cpu_info`).
        saturates: Result of :func:`probe_u8s8_saturation` (``None``: not probed).

    Returns:
        The class.
    """
    m = machine.lower()
    have = tuple(f for f in INT8_FLAGS if f in set(flags))
    if m in _X86:
        vnni = "avx512_vnni" in have or "avx_vnni" in have
        if saturates or (saturates is None and not vnni and "avx2" in have):
            return Int8Class(
                "x86-avx2", machine, have, saturates, True,
                "no VNNI: onnxruntime's u8 x s8 kernels saturate 16-bit pair sums here, so "
                "int8 results on this host differ from a Pi's; int8 is verified on a "
                "CPU-independent reference",
            )  # fmt: skip
        if vnni:
            return Int8Class(
                "x86-vnni", machine, have, saturates, True,
                "VNNI dot products: exact int8, several times faster than fp32",
            )  # fmt: skip
        return Int8Class(
            "x86", machine, have, saturates, False,
            "no AVX2/VNNI: int8 is not expected to pay off; measure with fastsam-edge bench",
        )  # fmt: skip
    if m in _ARM:
        if "i8mm" in have:
            return Int8Class(
                "arm-i8mm", machine, have, saturates, True,
                "int8 matrix-multiply instructions: int8 several times faster than fp32",
            )  # fmt: skip
        if "asimddp" in have:
            return Int8Class(
                "arm-dotprod", machine, have, saturates, True,
                "dot-product instructions (e.g. Pi 5's Cortex-A76): int8 several times "
                "faster than fp32",
            )  # fmt: skip
        return Int8Class(
            "arm-neon", machine, have, saturates, False,
            "no dot-product instructions (e.g. Pi 4's Cortex-A72): int8 kernels widen to 16 "
            "bits and are not expected to pay off over fp32; measure with fastsam-edge bench",
        )  # fmt: skip
    return Int8Class(
        "other", machine, have, saturates, False,
        "unknown CPU family: measure int8 against fp32 with fastsam-edge bench",
    )  # fmt: skip


@functools.cache
def int8_class() -> Int8Class:
    """This CPU's class (flags from ``/proc/cpuinfo``; on x86 the saturation probe decides).

    The probe also runs on ARM, where it shows that those kernels do not saturate.
    """
    machine = platform.machine()
    flags = set(cpu_info()["flags"])
    return classify(machine, flags, probe_u8s8_saturation())


def _conv_case(seed: int = 0) -> dict[str, Any]:
    """A QDQ conv whose exact sums need more than int16 per u8 x s8 pair (channels 0/1), one
    random full-range channel and one 7-bit channel; input near the top of the u8 range."""
    rng = np.random.default_rng(seed)
    cin, k, hw = 8, 3, (6, 6)
    w = np.empty((4, cin, k, k), np.int8)
    w[0], w[1] = 127, -127
    w[2] = rng.integers(-128, 128, w[2].shape)
    w[3] = rng.integers(-63, 64, w[3].shape)
    w_scale = np.full(4, 1.0 / 127, np.float32)
    x_scale = 1.0 / 255
    x_q = rng.integers(200, 256, (1, cin, *hw)).astype(np.float32)
    x = x_q * np.float32(x_scale)
    # exact float result, then an output scale that covers it
    x_dq = x_q * np.float32(x_scale)
    w_dq = w.astype(np.float32) * w_scale[:, None, None, None]
    oh, ow = hw[0] - k + 1, hw[1] - k + 1
    exact = np.zeros((1, 4, oh, ow), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x_dq[:, :, i : i + oh, j : j + ow].astype(np.float64)
            exact += np.einsum("bchw,oc->bohw", patch, w_dq[:, :, i, j].astype(np.float64))
    lo, hi = float(exact.min()), float(exact.max())
    y_scale = (hi - lo) / 255
    y_zp = int(round(-lo / y_scale))
    return {"w": w, "w_scale": w_scale, "x_scale": x_scale, "x": x, "exact": exact,
            "y_scale": y_scale, "y_zp": y_zp, "hw": hw}  # fmt: skip


def kernel_check() -> dict[str, Any]:
    """Check this CPU's int8 kernels against exact arithmetic (``python -m edge.cpu``).

    Runs the bench's int8 MatMul model (7-bit weights: exact everywhere), the saturation probe,
    and a QDQ int8 conv both fused (this CPU's kernels) and unfused (the CPU-independent
    reference ``fastsam-export`` verifies with), each against the exact result.

    Returns:
        ``{"class": {...}, "matmul_exact": bool, "probe_saturates": bool | None,
        "conv_fused_err": float, "conv_reference_err": float}``; the errors are the largest
        deviation from the exact conv in output quantization steps (<= 1 is rounding).
    """
    from edge.onnx_bytes import matmul_int8_weights, matmul_model, qdq_conv_model
    from edge.session import create_session

    n = 64
    a = np.random.default_rng(9).integers(0, 256, (n, n), dtype=np.uint8)
    mm = create_session(matmul_model(n, "int8", seed=3), threads=1).run(None, {"A": a})[0]
    want = a.astype(np.int32) @ matmul_int8_weights(n, 3).astype(np.int32)
    case = _conv_case()
    model = qdq_conv_model(
        case["w"], case["w_scale"], case["x_scale"], 0, case["y_scale"], case["y_zp"], case["hw"]
    )
    errs = {}
    for key, level in (("conv_fused_err", "all"), ("conv_reference_err", "disable")):
        y = create_session(model, threads=1, optimization=level).run(None, {"X": case["x"]})[0]
        errs[key] = round(float(np.abs(y - case["exact"]).max() / case["y_scale"]), 3)
    cls = int8_class()  # cached: its saturation probe runs once per process
    return {
        "class": cls.to_dict(),
        "matmul_exact": bool(np.array_equal(mm, want)),
        "probe_saturates": cls.saturates,
        **errs,
    }


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    import json

    print(json.dumps(kernel_check(), indent=2))
