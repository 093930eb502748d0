"""The arm64 check (scripts/arm64_check.sh): opt-in, needs root and Debian's mirrors.

Run with ``FASTSAM_ARM64_CHECK=1 pytest -m arm64 tests/test_arm64.py`` (deselected otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.arm64

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a72"])  # Pi 5 (dot product), Pi 4 (none)
def test_arm64_runtime_matches_x86(tmp_path, cpu):
    assert os.geteuid() == 0, "the arm64 check needs root (debootstrap, chroot, mounts)"
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "arm64_check.sh"),
            "--out",
            str(out),
            "--python",
            sys.executable,
            "--cpu",
            cpu,
            "--agreement",
            str(REPO / "edge" / "demo" / "assets" / "demo-bundle"),
            "--agreement-scenes",
            "8",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=3600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "platform.machine() = aarch64" in log
    compare = json.loads((out / "compare.json").read_text())
    fp32 = compare["fp32"]
    assert fp32["masks_arm64"] == fp32["masks_x86"] > 0
    assert min(fp32["min_iou_arm64_to_x86"], fp32["min_iou_x86_to_arm64"]) >= 0.999
    assert compare["int8"]["masks_arm64"] > 0
    kernels = json.loads((out / f"kernel-check-{cpu}.json").read_text())
    want = {"cortex-a76": "arm-dotprod", "cortex-a72": "arm-neon"}[cpu]
    assert kernels["class"]["name"] == want
    assert kernels["matmul_exact"] and kernels["conv_fused_err"] <= 1.0  # ARM does not saturate
    (row,) = json.loads((out / f"agreement-{cpu}.json").read_text())
    # the demo int8 model meets the int8 target on the emulated Pi CPU, and the export's
    # CPU-independent reference predicts it
    arm = row["arm64"]
    assert min(arm["mean_iou_fp32_to_int8"], arm["mean_iou_int8_to_fp32"]) >= 0.97
    assert arm["recall_fp32"] - arm["recall_int8"] <= 0.01
    assert row["reference_predicts_arm64"]
