#!/usr/bin/env python3
"""The fixed int8 recipe vs the plan the export chooses, side by side, for one model.

Usage: python scripts/int8_plan_compare.py (--weights PT | --bundle DIR) --out DIR
       [--world demo|texture] [--objects 3,8] [--imgsz 320] [--calib-count 32] [--scenes 16]
       [--conf C] [--threads 2]

Export env (torch for --weights). Steps: the fp32 detector (exported from --weights, or a
bundle's); --calib-count calibration scenes of --world written to OUT/calib (seeds
1_500_000..); ``quantize_detector`` twice on it, ``--int8-plan fixed`` and ``search`` (each
splits the images: every other one held out; the wall and CPU time of each is recorded); then
both int8 files (the refused one too) against fp32 on --scenes fresh held-out scenes of the same
world with ground truth (seeds 1_040_000..), reference and host kernels, int8 and fp32 timed
interleaved. Writes OUT/compare.json and prints one markdown row per plan.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from edge.bundle import Thresholds, read_manifest  # noqa: E402
from edge.demo.scenes import WORLDS, generate_scene, restyle  # noqa: E402
from export.quantize import CALIB_SEED_START, CalibrationSet  # noqa: E402

EVAL_START = 1_040_000


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", type=Path)
    src.add_argument("--bundle", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--world", choices=WORLDS, default="demo")
    p.add_argument("--objects", default="3,8", help="MIN,MAX objects per scene")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--conf", type=float, help="score threshold (default: the bundle's, 0.4)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    lo, hi = (int(v) for v in a.objects.split(","))
    th = Thresholds() if a.conf is None else Thresholds(conf=a.conf)
    if a.weights is not None:
        from export.fastsam import export_bundle

        fp32_bundle = export_bundle(
            a.weights, a.out / "fp32", imgsz=a.imgsz, int8=False, thresholds=th,
            measure_memory=False,
        )  # fmt: skip
    else:
        fp32_bundle = a.bundle
    m = read_manifest(fp32_bundle)
    hw = m.input.imgsz
    fp32 = fp32_bundle / m.detector_file("fp32")
    calib = a.out / "calib"
    calib.mkdir(exist_ok=True)
    for i in range(a.calib_count * 2):  # twice: the "more images" fix reads past the first set
        seed = CALIB_SEED_START + i
        s = generate_scene(seed, hw[1], hw[0], lo, hi)
        cv2.imwrite(str(calib / f"scene_{seed}.png"), restyle(s.image, seed, a.world))
    from edge.cpu import int8_class
    from export.int8plan import HeldOutEval, PlanOptions
    from export.quantize import QuantConfig, quantize_detector

    result: dict = {"model": str(a.weights or a.bundle), "world": a.world, "imgsz": list(hw),
                    "conf": th.conf, "int8_class": int8_class().name, "plans": {}}  # fmt: skip
    files = {}
    for mode in ("fixed", "search"):
        d = a.out / mode
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        shutil.copy(fp32, d / "fastsam.fp32.onnx")
        t0, c0 = time.perf_counter(), _cpu_s()
        files[mode] = d / "best.int8.onnx"
        section = quantize_detector(
            d, hw, m.input.dynamic, th, calib, QuantConfig(num_images=a.calib_count),
            threads=a.threads, plan=PlanOptions(mode=mode), keep_best=files[mode],
        )  # fmt: skip
        result["plans"][mode] = {
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(_cpu_s() - c0, 1),
            "status": section.status,
            "chosen": section.plan.chosen if section.plan else None,
            "float_blocks": [b.to_json() for b in section.plan.float_blocks],
            "tried": [t.to_json() for t in section.plan.tried],
            "export_held_out": section.verify,
        }
    scenes = [generate_scene(EVAL_START + i, hw[1], hw[0], lo, hi) for i in range(a.scenes)]
    held = CalibrationSet(
        [restyle(s.image, s.seed, a.world) for s in scenes], "eval", [s.masks for s in scenes]
    )
    ev = HeldOutEval(fp32, held, hw, m.input.dynamic, th, a.threads)
    for mode, f in files.items():
        ref = ev.measure(f, "reference")
        host = ev.measure(f, "host", timed=True)
        result["plans"][mode]["fresh_reference"] = ref
        result["plans"][mode]["fresh_host"] = host
    (a.out / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| model | plan | held-out IoU fp32->int8 / int8->fp32 (ref) | recall fp32 -> int8 | "
          "host IoU | speed-up | export wall / CPU s |")  # fmt: skip
    for mode, r in result["plans"].items():
        ref, host = r["fresh_reference"], r["fresh_host"]
        print(
            f"| {Path(result['model']).name} | {mode}: {r['chosen'] or 'refused'} | "
            f"{ref['mean_iou_fp32_to_int8']:.3f} / {ref['mean_iou_int8_to_fp32']:.3f} | "
            f"{ref['recall_fp32']:.3f} -> {ref['recall_int8']:.3f} | "
            f"{host['mean_iou_fp32_to_int8']:.3f} / {host['mean_iou_int8_to_fp32']:.3f} | "
            f"{host['speedup']:.2f}x | {r['wall_s']} / {r['cpu_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
