"""edge.cpu: the integer-kernel class, the saturation probe and the int8 kernel check.

The Haswell test runs the kernel check under ``qemu-x86_64-static -cpu Haswell`` (an AVX2 CPU
without VNNI; Debian's qemu-user-static, installed by scripts/test.sh), so that a regression to
CPU-dependent int8 results is caught on whichever CPU CI runs. qemu cannot emulate VNNI.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

from edge.cpu import classify, cpu_info, int8_class, kernel_check, probe_u8s8_saturation

QEMU = "qemu-x86_64-static"


@pytest.mark.parametrize(
    ("machine", "flags", "saturates", "name", "pays_off"),
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False, "x86-vnni", True),
        ("x86_64", {"avx2", "avx_vnni"}, None, "x86-vnni", True),
        ("x86_64", {"avx2"}, True, "x86-avx2", True),
        ("x86_64", {"avx2"}, None, "x86-avx2", True),
        # the probe wins over the flags (qemu shows the host's flags, or a future onnxruntime)
        ("x86_64", {"avx2", "avx512_vnni"}, True, "x86-avx2", True),
        ("x86_64", set(), False, "x86", False),
        ("aarch64", {"asimd", "asimddp", "i8mm"}, None, "arm-i8mm", True),
        ("aarch64", {"asimd", "asimddp"}, None, "arm-dotprod", True),
        ("aarch64", {"asimd"}, None, "arm-neon", False),  # Pi 4's Cortex-A72
        ("armv7l", set(), None, "arm-neon", False),
        ("riscv64", set(), None, "other", False),
    ],
)
def test_classify(machine, flags, saturates, name, pays_off):
    c = classify(machine, flags, saturates)
    assert (c.name, c.int8_pays_off, c.saturates) == (name, pays_off, saturates)
    assert c.describe().startswith(name) and c.note
    assert json.loads(json.dumps(c.to_dict()))["name"] == name


def test_pi4_note_says_int8_does_not_pay_off():
    c = classify("aarch64", set(cpu_info("Features : fp asimd evtstrm crc32 cpuid")["flags"]),
                 None)  # fmt: skip
    assert c.name == "arm-neon" and "not expected to pay off" in c.note


def test_this_cpu_class_is_consistent_with_its_kernels():
    c = int8_class()
    assert c.machine == platform.machine()
    check = kernel_check()
    assert check["matmul_exact"], "the bench's int8 MatMul model must be exact on every CPU"
    assert check["conv_reference_err"] <= 1.0, check  # the reference is rounding-exact
    if check["probe_saturates"] is not None:
        assert check["probe_saturates"] == probe_u8s8_saturation() == c.saturates
        # the probe predicts what a real QDQ conv does with this CPU's fused kernels
        assert (check["conv_fused_err"] > 2.0) == check["probe_saturates"], check


def _qemu_haswell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="qemu-x86_64 user emulation is for x86-64 hosts"
)
def test_int8_kernels_on_an_avx2_cpu_without_vnni():
    assert shutil.which(QEMU), f"{QEMU} missing: scripts/test.sh installs qemu-user-static"
    proc = _qemu_haswell("-m", "edge.cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads(proc.stdout)
    # Haswell has AVX2 and no VNNI: onnxruntime's u8 x s8 kernels saturate there
    assert check["class"]["name"] == "x86-avx2" and check["probe_saturates"] is True
    assert check["matmul_exact"], "bench int8 MatMul model is not exact on AVX2"
    assert check["conv_reference_err"] <= 1.0, "the int8 reference is CPU-dependent"
    assert check["conv_fused_err"] > 2.0, "probe says saturating but the conv is exact"


@pytest.mark.skipif(
    platform.machine() != "x86_64", reason="qemu-x86_64 user emulation is for x86-64 hosts"
)
def test_bench_int8_matmul_test_passes_on_avx2():
    """The bench-ops int8 test itself, run by pytest on the emulated AVX2 CPU."""
    proc = _qemu_haswell(
        "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/test_bench_ops.py::test_matmul_model_computes_a_times_b",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout


@pytest.mark.parametrize(
    ("precision", "machine", "flags", "saturates", "status"),
    [
        ("int8", "aarch64", {"asimd", "asimddp"}, None, "OK"),
        ("int8", "aarch64", {"asimd"}, None, "WARN"),  # Pi 4: int8 does not pay off
        ("fp32", "aarch64", {"asimd"}, None, "OK"),
        ("int8", "x86_64", {"avx2"}, True, "WARN"),  # saturating kernels
        (None, "x86_64", {"avx2"}, True, "OK"),
        ("int8", "x86_64", {"avx2", "avx512_vnni"}, False, "OK"),
    ],
)
def test_doctor_int8_check(precision, machine, flags, saturates, status):
    from edge.service.doctor import check_int8_cpu

    cls = classify(machine, flags, saturates)
    check = check_int8_cpu(precision, cls)
    assert check.status == status and cls.name in check.message
    assert (check.fix != "") == (status == "WARN")


def test_info_names_the_int8_class(demo_bundle):
    from helpers import run_cli

    proc = run_cli("info", "--bundle", str(demo_bundle))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("int8 cpu:"))
    assert int8_class().name in line
    proc = run_cli("info", "--bundle", str(demo_bundle), "--json")
    assert json.loads(proc.stdout)["int8_class"]["name"] == int8_class().name


@pytest.mark.parametrize(
    ("machine", "flags", "saturates", "warned"),
    [
        ("x86_64", {"avx2"}, True, True),
        ("aarch64", {"asimd"}, None, True),
        ("aarch64", {"asimd", "asimddp"}, None, False),
    ],
)
def test_segmenter_warns_about_int8_on_this_cpu(
    demo_bundle, monkeypatch, caplog, machine, flags, saturates, warned
):
    import edge.cpu
    from edge import Segmenter

    monkeypatch.setattr(edge.cpu, "int8_class", lambda: classify(machine, flags, saturates))
    with caplog.at_level("WARNING", logger="edge.segmenter"):
        Segmenter.load(demo_bundle, precision="int8", threads=1)
        Segmenter.load(demo_bundle, precision="fp32", threads=1)
    assert ("int8 on this CPU" in caplog.text) == warned
