#!/usr/bin/env python3
"""Where the int8 detector's time goes, and which recipe/session choices close the gap to peak.

For one bundle's fp32 detector, builds int8 variants (static calibration on built-in scenes,
the export's own :func:`export.quantize.write_int8_detector`), then measures each on this machine
with the same threads, the variants interleaved round by round so load drift hits all alike:

- median inference ms and speed-up over fp32;
- achieved GOP/s (operations counted from onnxruntime's profile of the fp32 graph, see
  ``edge.bench.flops``) against the measured int8/fp32 MatMul peak (``edge.bench.peak``);
- time per operator type from onnxruntime's profiler, and the convolutions' own rate
  (conv operations / ``QLinearConv`` time): how far the int8 kernels are from the MatMul peak
  versus how much time goes to non-conv operators (SiLU, Concat, Resize, Q/DQ at float edges);
- mask agreement with fp32 (mean best-match IoU both ways) and recall on held-out scenes.

Needs the export extra. Writes ``<out>/int8-gap.json`` and ``<out>/int8-gap.md``.

Example:
    python scripts/int8_gap.py work/bench/s640 --threads 2 --out docs/bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge.bench.flops import profile_model  # noqa: E402
from edge.bench.peak import matmul_peak  # noqa: E402
from edge.bundle import read_manifest  # noqa: E402
from edge.session import create_session  # noqa: E402
from export.quantize import (  # noqa: E402
    CalibrationSet,
    QuantConfig,
    compare_precisions,
    load_calibration,
    write_int8_detector,
)

EVAL_SEED = 1_000_000 + 820_000  # held-out block (edge.demo.scenes: eval seeds >= 1_000_000)

# name -> (recipe, session graph optimisation level)
VARIANTS: dict[str, tuple[QuantConfig, str]] = {
    "export default (QDQ, per-channel, u8 act, cv3/cv4 float)": (QuantConfig(), "all"),
    "same model, session level 'extended' (no layout transform)": (QuantConfig(), "extended"),
    "QOperator format": (QuantConfig(format="qoperator"), "all"),
    "SiLU float (Sigmoid, Mul not quantized)": (QuantConfig(float_ops=("Sigmoid", "Mul")), "all"),
    "int8 activations (s8s8)": (QuantConfig(activations="int8"), "all"),
    "per-tensor weights": (QuantConfig(per_channel=False), "all"),
    "all head convs int8 (no float branches)": (QuantConfig(float_branches=()), "all"),
    "box branch float too (cv2, cv3, cv4)": (
        QuantConfig(float_branches=("cv2", "cv3", "cv4")),
        "all",
    ),
    "percentile calibration (99.999)": (QuantConfig(method="percentile"), "all"),
}


def _time_interleaved(
    sessions: dict[str, Any], tensor: np.ndarray, rounds: int, per_round: int
) -> dict[str, float]:
    """Median ms per session, sessions interleaved round by round (order rotated)."""
    names = list(sessions)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sess = sessions[n]
            feed = {sess.get_inputs()[0].name: tensor}
            for _ in range(per_round):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times[n].append((time.perf_counter() - t0) * 1e3)
    return {n: float(np.median(v)) for n, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("bundle", help="bundle with fastsam.fp32.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    p.add_argument("--per-round", type=int, default=2, help="runs per variant per round")
    p.add_argument("--calib", type=int, default=24, help="calibration scenes")
    p.add_argument("--eval", type=int, default=40, help="held-out scenes for agreement")
    p.add_argument("--only", help="comma-separated variant indices (0-based) to run")
    p.add_argument("--out", default="int8-gap", help="output directory")
    a = p.parse_args(argv)

    from edge.demo.scenes import generate_scene
    from edge.io import atomic_write_bytes, atomic_write_json

    bundle = Path(a.bundle)
    manifest = read_manifest(bundle)
    spec = manifest.input
    fp32 = bundle / manifest.detector_file("fp32")
    h, w = spec.imgsz
    calib = load_calibration(None, spec.imgsz, a.calib)
    scenes = [generate_scene(EVAL_SEED + i, w, h) for i in range(a.eval)]
    held_out = CalibrationSet(
        [s.image for s in scenes], "held-out scenes", [s.masks for s in scenes]
    )
    variants = list(VARIANTS.items())
    if a.only:
        variants = [variants[int(i)] for i in a.only.split(",")]

    th = manifest.thresholds
    fp32_prof = profile_model(fp32, (1, 3, h, w), a.threads, runs=2)
    conv_gop = fp32_prof["ops_by_type"].get("Conv", 0.0) + fp32_prof["ops_by_type"].get(
        "FusedConv", 0.0
    )
    peak = {prec: matmul_peak(prec, a.threads) for prec in ("fp32", "int8")}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="int8-gap-") as tmp:
        files: dict[str, Path] = {}
        for k, (name, (cfg, _level)) in enumerate(variants):
            path = Path(tmp) / f"v{k}.onnx"
            if k > 0 and cfg == variants[0][1][0]:
                files[name] = files[variants[0][0]]
                continue
            print(f"[{k + 1}/{len(variants)}] quantizing: {name}", file=sys.stderr, flush=True)
            write_int8_detector(fp32, path, calib.images, spec.imgsz, spec.dynamic,
                              replace(cfg, num_images=len(calib.images)))  # fmt: skip
            files[name] = path
        sessions = {"fp32": create_session(fp32, threads=a.threads)}
        for name, (_cfg, level) in variants:
            sessions[name] = create_session(files[name], threads=a.threads, optimization=level)
        tensor = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        ms = _time_interleaved(sessions, tensor, a.rounds, a.per_round)
        for name, (cfg, level) in variants:
            prof = profile_model(files[name], (1, 3, h, w), a.threads, 3, level)
            agree = compare_precisions(fp32, files[name], held_out, spec.imgsz, spec.dynamic,
                                       th.conf, th.iou, th.max_det, a.threads)  # fmt: skip
            qconv_ms = prof["ms_by_type"].get("QLinearConv", 0.0)
            total_ms = sum(prof["ms_by_type"].values())
            rows.append(
                {
                    "variant": name,
                    "recipe": cfg.to_dict(),
                    "session_optimization": level,
                    "infer_ms": ms[name],
                    "speedup_vs_fp32": ms["fp32"] / ms[name],
                    "gops": fp32_prof["gop"] / (ms[name] / 1e3),
                    "pct_of_int8_peak": 100
                    * fp32_prof["gop"]
                    / (ms[name] / 1e3)
                    / peak["int8"]["gops"],
                    "profile_ms_by_type": {k: round(v, 2) for k, v in prof["ms_by_type"].items()},
                    "qlinearconv_share": qconv_ms / total_ms if total_ms else None,
                    # only meaningful where the convolutions really run as QLinearConv
                    "conv_gops": conv_gop / (qconv_ms / 1e3)
                    if total_ms and qconv_ms > 0.05 * total_ms
                    else None,
                    "agreement": agree,
                }
            )
            print(f"  {name}: {ms[name]:.1f} ms ({ms['fp32'] / ms[name]:.2f}x), IoU "
                  f"{agree['mean_iou_fp32_to_int8']}/{agree['mean_iou_int8_to_fp32']}",
                  file=sys.stderr, flush=True)  # fmt: skip
    report = {
        "bundle": str(bundle),
        "input": [w, h],
        "threads": a.threads,
        "fp32_ms": ms["fp32"],
        "fp32_gops": fp32_prof["gop"] / (ms["fp32"] / 1e3),
        "model_gop": fp32_prof["gop"],
        "conv_gop": conv_gop,
        "fp32_profile_ms_by_type": {k: round(v, 2) for k, v in fp32_prof["ms_by_type"].items()},
        "peak": peak,
        "rounds": a.rounds,
        "per_round": a.per_round,
        "rows": rows,
    }
    out = Path(a.out)
    atomic_write_json(out / "int8-gap.json", report)
    md = to_markdown(report)
    atomic_write_bytes(out / "int8-gap.md", md.encode())
    print(md)
    return 0


def to_markdown(report: dict[str, Any]) -> str:
    """The study as a Markdown table plus the fp32 and peak context."""
    pk = report["peak"]
    lines = [
        f"Bundle `{report['bundle']}` ({report['input'][0]}x{report['input'][1]}), "
        f"{report['threads']} threads; model {report['model_gop']:.1f} GOP "
        f"({report['conv_gop']:.1f} in convolutions). fp32: {report['fp32_ms']:.1f} ms = "
        f"{report['fp32_gops']:.0f} GOP/s; MatMul peak fp32 {pk['fp32']['gops']:.0f}, "
        f"int8 {pk['int8']['gops']:.0f} GOP/s. Median of {report['rounds']} interleaved rounds "
        f"x {report['per_round']} runs.",
        "",
        "| variant | session level | int8 ms | x fp32 | GOP/s (% int8 peak) | QLinearConv share "
        "| conv GOP/s | top non-conv ops (ms) | IoU fp32->int8 | IoU int8->fp32 "
        "| recall fp32/int8 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        other = [(k, v) for k, v in r["profile_ms_by_type"].items() if k != "QLinearConv"][:3]
        ag = r["agreement"]
        share = r["qlinearconv_share"]
        conv = "-" if r["conv_gops"] is None else f"{r['conv_gops']:.0f}"
        lines.append(
            f"| {r['variant']} | {r['session_optimization']} | {r['infer_ms']:.1f} "
            f"| {r['speedup_vs_fp32']:.2f} | {r['gops']:.0f} ({r['pct_of_int8_peak']:.0f} %) "
            f"| {'-' if share is None else f'{100 * share:.0f} %'} "
            f"| {conv} "
            f"| {', '.join(f'{k} {v:.1f}' for k, v in other)} "
            f"| {ag['mean_iou_fp32_to_int8']} | {ag['mean_iou_int8_to_fp32']} "
            f"| {ag.get('recall_fp32', '-')}/{ag.get('recall_int8', '-')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
