"""Peak memory of a bundle, measured at export and recorded in ``bundle.json`` (``memory``).

Each figure comes from a fresh Python process that imports only the runtime (``edge``), loads
the bundle at one detector precision, segments one synthetic camera frame and, for bundles
with CLIP, answers one text prompt; its peak resident set is the figure. A fresh process per
case keeps one case's arena and caches out of the next one's. The peak is read from
``VmHWM`` in ``/proc/self/status`` (the high-water mark of the process's own address space):
Linux carries ``ru_maxrss`` across ``execve``, so the child's ``ru_maxrss`` would report the
(larger) exporting parent's peak at fork time. ``ru_maxrss`` is only the fallback where there
is no ``/proc``. The service's ``MemoryMax=``
(``fastsam-edge install-service``) and ``fastsam-edge doctor`` read the result.

Run on its own to (re)measure an existing bundle::

    python -m export.memory BUNDLE [--frame 960x1280] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from edge.bundle import MANIFEST_NAME, MemoryProfile, read_manifest
from edge.errors import BundleError
from edge.io import atomic_write_bytes

_LOGGER = logging.getLogger(__name__)

# The service's default camera frame (source.width x source.height = 1280 x 960): masks are
# built at frame resolution, so the frame size matters as much as the model's input size.
DEFAULT_FRAME_HW = (960, 1280)
DEFAULT_THREADS = 2
TEXT_PROMPT = "a red circle"

# Runs in the child: argv = bundle precision text|"" image threads (the frame is drawn by the
# parent, so drawing it does not count)
_CHILD = r"""
import json, resource, sys
bundle, precision, text, image_path, threads = sys.argv[1:6]
from edge.io import read_image
from edge.segmenter import Segmenter
from edge.prompts import TextPrompt
image = read_image(image_path)
seg = Segmenter.load(bundle, precision=precision, threads=int(threads))
seg.segment(image)
if text:
    seg.segment(image, prompt=TextPrompt(text))
assert "torch" not in sys.modules
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as fh:
        peak = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"peak_kib": peak}))
"""


def measure_peak_mib(
    bundle_dir: str | Path,
    precision: str,
    text: str | None = None,
    frame_hw: tuple[int, int] = DEFAULT_FRAME_HW,
    threads: int = DEFAULT_THREADS,
    timeout_s: float = 900.0,
) -> float:
    """Peak RSS in MiB of one fresh process segmenting one frame (and one text prompt).

    The frame is a synthetic demo scene (coloured shapes on texture) of ``frame_hw``.

    Raises:
        BundleError: The measuring process failed (its last output lines are quoted).
    """
    import cv2

    from edge.demo.scenes import generate_scene

    with tempfile.TemporaryDirectory(prefix="fastsam-memory-") as tmp:
        frame = Path(tmp) / "frame.png"
        cv2.imwrite(str(frame), generate_scene(1_000_000, frame_hw[1], frame_hw[0], 6, 12).image)
        cmd = [sys.executable, "-c", _CHILD, str(bundle_dir), precision, text or ""]
        cmd += [str(frame), str(threads)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise BundleError(
                f"memory measurement ({precision}, text={bool(text)}) timed out after "
                f"{timeout_s:g} s"
            ) from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise BundleError(
            f"memory measurement ({precision}, text={bool(text)}) failed with exit code "
            f"{proc.returncode}: {tail}"
        )
    kib = json.loads(proc.stdout.strip().splitlines()[-1])["peak_kib"]
    return round(kib / 1024, 1)


def measure_bundle(
    bundle_dir: str | Path,
    frame_hw: tuple[int, int] = DEFAULT_FRAME_HW,
    threads: int = DEFAULT_THREADS,
) -> MemoryProfile:
    """Measure every detector precision of a bundle, with a text prompt when it has CLIP."""
    import onnxruntime

    manifest = read_manifest(bundle_dir)
    peaks: dict[str, dict[str, float]] = {}
    for precision in manifest.precisions:
        row = {"segment": measure_peak_mib(bundle_dir, precision, None, frame_hw, threads)}
        if manifest.has_text:
            row["text"] = measure_peak_mib(bundle_dir, precision, TEXT_PROMPT, frame_hw, threads)
        peaks[precision] = row
        _LOGGER.info("peak memory %s: %s", precision, row)
    return MemoryProfile(
        peak_mib=peaks,
        frame_hw=frame_hw,
        threads=threads,
        machine=platform.machine(),
        onnxruntime=onnxruntime.__version__,
    )


def record_memory(
    bundle_dir: str | Path,
    frame_hw: tuple[int, int] = DEFAULT_FRAME_HW,
    threads: int = DEFAULT_THREADS,
) -> MemoryProfile:
    """Measure a bundle and write the ``memory`` section into its ``bundle.json`` (atomically).

    Only the manifest changes; the model files and their hashes stay as they are.
    """
    profile = measure_bundle(bundle_dir, frame_hw, threads)
    path = Path(bundle_dir) / MANIFEST_NAME
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["memory"] = profile.to_dict()
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    read_manifest(bundle_dir)  # the section must parse back
    return profile


def format_profile(profile: MemoryProfile) -> str:
    """One line per precision, e.g. ``fp32: segment 252 MiB, text 1080 MiB``."""
    h, w = profile.frame_hw
    lines = [f"peak memory ({w}x{h} frame, {profile.threads} threads, {profile.machine}):"]
    for precision, row in profile.peak_mib.items():
        lines.append(
            f"  {precision}: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(row.items()))
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m export.memory BUNDLE``: (re)measure and record a bundle's peak memory."""
    p = argparse.ArgumentParser(prog="python -m export.memory", description=__doc__.split("\n")[0])
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--frame", default="960x1280", help="frame HxW (default 960x1280)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="onnxruntime threads")
    args = p.parse_args(argv)
    try:
        h, w = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        p.error(f"--frame: expected HxW, e.g. 960x1280, got {args.frame!r}")
    try:
        profile = record_memory(args.bundle, (h, w), args.threads)
    except BundleError as exc:
        print(f"export.memory: error: {exc}", file=sys.stderr)
        return 2
    print(format_profile(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
