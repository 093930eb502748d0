"""int8 vs fp32 agreement of a bundle's detector on held-out scenes, with this CPU's kernels.

Usage: python scripts/int8_agreement.py BUNDLE [--scenes 16] [--objects 3,8] [--threads 2]
       [--kernels host|reference|both] [--seed-offset 30000] [--conf C] [--out FILE.json]
       [--world demo|texture]

Runtime-only (numpy, onnxruntime, OpenCV): it runs on a Pi and inside the arm64 check's
emulated root (scripts/arm64_check.sh --agreement), where "host" means the ARM CPU model's
integer kernels. Held-out scenes (seeds >= 1_000_000 + offset, ground truth known) are drawn at
the bundle's input size. Prints one line and writes JSON with the CPU's int8 class.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.bundle import read_manifest  # noqa: E402
from edge.cpu import cpu_info, int8_class  # noqa: E402
from edge.demo.scenes import EVAL_SEED_START, WORLDS, generate_scene, restyle  # noqa: E402
from export.quantize import CalibrationSet, agreement_of, compare_precisions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--objects", default="3,8", help="MIN,MAX objects per scene")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernels", choices=("host", "reference", "both"), default="both")
    p.add_argument("--seed-offset", type=int, default=30_000)
    p.add_argument("--conf", type=float, help="score threshold (default: the bundle's)")
    p.add_argument("--out", type=Path)
    p.add_argument("--world", choices=WORLDS, default="demo", help="scene style (restyle)")
    a = p.parse_args(argv)
    m = read_manifest(a.bundle)
    if "int8" not in m.precisions:
        raise SystemExit(f"{a.bundle}: no int8 detector")
    h, w = m.input.imgsz
    lo, hi = (int(v) for v in a.objects.split(","))
    scenes = [
        generate_scene(EVAL_SEED_START + a.seed_offset + i, w, h, lo, hi) for i in range(a.scenes)
    ]
    images = [restyle(s.image, s.seed, a.world) for s in scenes]
    held_out = CalibrationSet(images, "held-out", [s.masks for s in scenes])
    th = m.thresholds
    kernels = ("host", "reference") if a.kernels == "both" else (a.kernels,)
    result = {
        "bundle": m.name,
        "cpu": cpu_info()["cpu"],
        "int8_class": int8_class().to_dict(),
        "scenes": a.scenes,
        "objects": [lo, hi],
        "conf": a.conf or th.conf,
    }
    for k in kernels:
        rep = compare_precisions(
            a.bundle / m.detector_file("fp32"), a.bundle / m.detector_file("int8"), held_out,
            (h, w), m.input.dynamic, a.conf or th.conf, th.iou, th.max_det, a.threads, kernels=k,
        )  # fmt: skip
        result[k] = rep
        print(
            f"{m.name} [{k}, {result['int8_class']['name']}]: mean mask IoU "
            f"{rep['mean_iou_fp32_to_int8']:.3f} (fp32->int8) / "
            f"{rep['mean_iou_int8_to_fp32']:.3f} (int8->fp32), min {agreement_of(rep):.3f}; "
            f"recall {rep['recall_fp32']:.3f} -> {rep['recall_int8']:.3f}",
            flush=True,
        )
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
