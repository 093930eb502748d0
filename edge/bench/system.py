"""Machine facts and board state (temperature, clocks, throttling) recorded with a benchmark.

Everything here reads Linux sysfs/procfs files and, on a Raspberry Pi, ``vcgencmd``; missing
sources give ``None`` rather than errors, so the same code runs on a Pi, an x86 workstation and
under emulation.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edge.cpu import cpu_info, int8_class

__all__ = ["board_state", "cpu_info", "decode_throttled", "machine_facts", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux's ``VmHWM`` belongs to the process image, whereas ``getrusage``'s ``ru_maxrss`` is
    preserved across ``execve``: a worker started from a big parent would report the parent's
    peak. ``ru_maxrss`` is only the fallback where ``/proc`` is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    """CPU, cores, OS and library versions recorded with every benchmark."""
    import cv2
    import onnxruntime as ort

    info = cpu_info()
    return {
        "cpu": info["cpu"],
        "cpu_flags": info["flags"],
        "int8_class": int8_class().to_dict(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "affinity_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "emulated": _emulated(),
    }


def _emulated() -> bool:
    """True under qemu-user (the arm64 check): timings there mean nothing."""
    model = (_read("/proc/cpuinfo") or "").lower()
    return "qemu" in model or "emulated" in model


def decode_throttled(value: int) -> dict[str, bool]:
    """Bits of ``vcgencmd get_throttled`` (Raspberry Pi firmware documentation).

    Bits 0-3 are the current state, bits 16-19 "has occurred since boot".
    """
    names = {
        0: "under_voltage",
        1: "arm_freq_capped",
        2: "throttled",
        3: "soft_temp_limit",
        16: "under_voltage_occurred",
        17: "arm_freq_capped_occurred",
        18: "throttled_occurred",
        19: "soft_temp_limit_occurred",
    }
    return {name: bool(value >> bit & 1) for bit, name in names.items()}


def _vcgencmd(*args: str) -> str | None:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def board_state(sysfs: str | Path = "/sys") -> dict[str, Any]:
    """Temperatures, CPU clocks and the Pi's throttling flags right now.

    Args:
        sysfs: Root of sysfs (tests point it at a fake tree).

    Returns:
        ``{"temperature_c": {zone type: °C}, "cpu_mhz": {"cur": [...], "max": [...]},
        "governor": str | None, "throttled": {"raw": "0x0", flags...} | None}``.
    """
    root = Path(sysfs)
    temps: dict[str, float] = {}
    for zone in sorted(root.glob("class/thermal/thermal_zone*")):
        raw = _read(zone / "temp")
        if raw and raw.lstrip("-").isdigit():
            kind = _read(zone / "type") or zone.name
            temps[kind if kind not in temps else f"{kind}-{zone.name}"] = int(raw) / 1000
    cur, top = [], []
    governor = None
    for cpu in sorted(root.glob("devices/system/cpu/cpu[0-9]*/cpufreq")):
        for name, out in (("scaling_cur_freq", cur), ("cpuinfo_max_freq", top)):
            raw = _read(cpu / name)
            if raw and raw.isdigit():
                out.append(int(raw) / 1000)
        governor = governor or _read(cpu / "scaling_governor")
    throttled = None
    text = _vcgencmd("get_throttled")
    if text and "=" in text:
        try:
            value = int(text.split("=", 1)[1], 16)
            throttled = {"raw": hex(value), **decode_throttled(value)}
        except ValueError:
            throttled = {"raw": text}
    return {
        "temperature_c": temps,
        "cpu_mhz": {"cur": cur, "max": top},
        "governor": governor,
        "throttled": throttled,
    }
