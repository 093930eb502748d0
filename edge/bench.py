"""``fastsam-edge bench``: side-by-side latency and memory of this runtime (and the reference).

Every measured configuration runs in its own worker process (``python -m edge.bench worker``),
so peak RSS is that configuration's alone: interpreter + numpy + onnxruntime + the model + the
work of one image. The same image, conf threshold and thread count go to every side; conf is
chosen per image to reach a target mask count (~20 / ~100 / ~300), and the count each side
actually produced is reported next to its timings.

The reference side (ultralytics' FastSAM on the .pt and on the same ONNX file) is only run with
``--compare-reference WEIGHTS.pt`` and needs the ``export`` extra; its worker lives in
``export.bench_reference`` and is started as a separate process, so ``edge`` never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("preprocess", "infer", "postprocess")


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


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def run_edge_worker(
    bundle: str, precision: str, image_path: str, conf: float, threads: int, runs: int, warmup: int
) -> dict[str, Any]:
    """Time this runtime on one image (called inside the worker process)."""
    from edge.io import read_image
    from edge.segmenter import Segmenter

    image = read_image(image_path)
    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    for _ in range(warmup):
        seg.segment(image, conf=conf)
    per_stage: dict[str, list[float]] = {k: [] for k in STAGES}
    total: list[float] = []
    n = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        result = seg.segment(image, conf=conf)
        total.append((time.perf_counter() - t0) * 1e3)
        for k in STAGES:
            per_stage[k].append(result.timings[k])
        n = len(result)
    return {
        "masks": n,
        "stages_ms": {k: _median(v) for k, v in per_stage.items()},
        "end_to_end_ms": _median(total),
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
    }


def _spawn(module: str, args: list[str], threads: int, timeout: float = 1800) -> dict[str, Any]:
    """Run a worker module in a fresh interpreter and parse its last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "YOLO_OFFLINE": "1",
            "OMP_NUM_THREADS": str(threads),
        },
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def choose_confs(
    bundle: str, image: np.ndarray, targets: list[int], threads: int
) -> dict[int, float]:
    """Conf thresholds that give about ``targets`` masks on ``image`` (fp32 model).

    Each is the midpoint between the k-th and (k+1)-th best scores of a low-threshold run, so
    every side sees the same, unambiguous cut.
    """
    from edge.segmenter import Segmenter

    seg = Segmenter.load(bundle, precision="fp32", threads=threads)
    scores = np.sort(seg.segment(image, conf=0.001, max_det=1000).confidence)[::-1]
    out = {}
    for k in targets:
        if k >= len(scores):
            out[k] = float(max(scores[-1] - 1e-4, 0.0)) if len(scores) else 0.001
        else:
            out[k] = float((scores[k - 1] + scores[k]) / 2)
    return out


def machine_facts() -> dict[str, Any]:
    """CPU, cores and library versions recorded with every benchmark."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
    }


def run_bench(
    bundle: str,
    images: dict[str, np.ndarray],
    mask_targets: list[int],
    precisions: list[str],
    threads: int,
    runs: int,
    warmup: int,
    reference_weights: str | None = None,
    reference_imgsz: int | None = None,
) -> dict[str, Any]:
    """Measure every (image, mask target, side) configuration in its own process.

    Returns:
        The JSON-able report: machine facts, bundle, settings and one row per configuration.
    """
    from edge.bundle import read_manifest
    from edge.io import atomic_write_image

    manifest = read_manifest(bundle)
    sides = [("edge", p) for p in precisions if p in manifest.precisions]
    if reference_weights:
        sides += [("ultralytics-pt", "fp32"), ("ultralytics-onnx", "fp32")]
    rows = []
    todo = len(images) * len(mask_targets) * len(sides)
    done = 0
    with tempfile.TemporaryDirectory(prefix="fastsam-bench-") as tmp:
        for name, image in images.items():
            path = Path(tmp) / f"{name}.png"
            atomic_write_image(path, image)
            confs = choose_confs(bundle, image, mask_targets, threads)
            for target in mask_targets:
                # Interleave sides per configuration so load drift hits all of them alike.
                for side, precision in sides:
                    common = [
                        "--image",
                        str(path),
                        "--conf",
                        repr(confs[target]),
                        "--threads",
                        str(threads),
                        "--runs",
                        str(runs),
                        "--warmup",
                        str(warmup),
                    ]
                    if side == "edge":
                        res = _spawn(
                            "edge.bench",
                            ["worker", "--bundle", bundle, "--precision", precision, *common],
                            threads,
                        )
                    else:
                        target_file = (
                            reference_weights
                            if side == "ultralytics-pt"
                            else str(Path(bundle) / "fastsam.fp32.onnx")
                        )
                        imgsz = reference_imgsz or manifest.input.imgsz[0]
                        res = _spawn(
                            "export.bench_reference",
                            ["--model", target_file, "--imgsz", str(imgsz), *common],
                            threads,
                        )
                    done += 1
                    print(
                        f"[{done}/{todo}] {name} ~{target} masks {side} {precision}: "
                        f"{res['masks']} masks, {res['end_to_end_ms']:.1f} ms, "
                        f"{res['peak_rss_mb']:.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
                    rows.append(
                        {
                            "image": name,
                            "image_wh": [int(image.shape[1]), int(image.shape[0])],
                            "target_masks": target,
                            "conf": confs[target],
                            "side": side,
                            "precision": precision,
                            **res,
                        }
                    )
    for row in rows:
        st = row["stages_ms"]
        row["pre_post_ms"] = st["preprocess"] + st["postprocess"]
        row["pre_post_over_model"] = row["pre_post_ms"] / max(st["infer"], 1e-9)
        row["postprocess_ms_per_mask"] = st["postprocess"] / max(row["masks"], 1)
    return {
        "schema_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_facts(),
        "bundle": {
            "dir": str(bundle),
            "name": manifest.name,
            "input": list(manifest.input.imgsz),
            "dynamic": manifest.input.dynamic,
            "source": manifest.source,
        },
        "settings": {"threads": threads, "runs": runs, "warmup": warmup, "statistic": "median"},
        "rows": rows,
    }


def to_markdown(report: dict[str, Any]) -> str:
    """A human table of a bench report, with speed-ups against the ultralytics torch side."""
    m, b, s = report["machine"], report["bundle"], report["settings"]
    lines = [
        f"Bundle `{b['name']}` (input {b['input'][0]}x{b['input'][1]}), {m['cpu']}, "
        f"{s['threads']} threads, median of {s['runs']} runs, onnxruntime {m['onnxruntime']}.",
        "",
        "| image | ~masks | side | masks | pre ms | model ms | post ms | end-to-end ms "
        "| post ms/mask | (pre+post)/model | x vs ultralytics .pt | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = {
        (r["image"], r["target_masks"]): r["end_to_end_ms"]
        for r in report["rows"]
        if r["side"] == "ultralytics-pt"
    }
    for r in report["rows"]:
        st = r["stages_ms"]
        base = ref.get((r["image"], r["target_masks"]))
        speed = f"{base / r['end_to_end_ms']:.1f}x" if base else "-"
        side = r["side"] if r["side"] != "edge" else f"edge {r['precision']}"
        lines.append(
            f"| {r['image']} {r['image_wh'][0]}x{r['image_wh'][1]} | {r['target_masks']} "
            f"| {side} | {r['masks']} | {st['preprocess']:.1f} | {st['infer']:.1f} "
            f"| {st['postprocess']:.1f} | {r['end_to_end_ms']:.1f} "
            f"| {r['postprocess_ms_per_mask']:.3f} | {r['pre_post_over_model']:.3f} | {speed} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def draw_plot(report: dict[str, Any], width: int = 900) -> np.ndarray:
    """A bar chart (OpenCV only) of end-to-end ms per configuration and side, log-free.

    Returns:
        (H, W, 3) uint8 BGR image; one group of bars per (image, target masks).
    """
    import cv2

    rows = report["rows"]
    sides = list(dict.fromkeys(f"{r['side']} {r['precision']}" for r in rows))
    colors = [(200, 120, 40), (60, 170, 60), (40, 60, 220), (160, 60, 160), (30, 160, 200)]
    groups = list(dict.fromkeys((r["image"], r["target_masks"]) for r in rows))
    bar_h, gap, left, top = 14, 12, 230, 40
    height = top + len(groups) * (len(sides) * bar_h + gap) + 20 + 18 * len(sides)
    img = np.full((height, width, 3), 255, np.uint8)
    vmax = max(r["end_to_end_ms"] for r in rows) or 1.0
    scale = (width - left - 90) / vmax
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "end-to-end ms (median)", (left, 24), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    y = top
    for image, target in groups:
        cv2.putText(img, f"{image} ~{target}", (8, y + bar_h), font, 0.45, (0, 0, 0), 1)
        for k, side in enumerate(sides):
            match = [
                r
                for r in rows
                if (r["image"], r["target_masks"]) == (image, target)
                and f"{r['side']} {r['precision']}" == side
            ]
            if match:
                ms = match[0]["end_to_end_ms"]
                x1 = left + max(int(ms * scale), 1)
                cv2.rectangle(img, (left, y), (x1, y + bar_h - 2), colors[k % len(colors)], -1)
                cv2.putText(img, f"{ms:.0f}", (x1 + 4, y + bar_h - 3), font, 0.4, (0, 0, 0), 1)
            y += bar_h
        y += gap
    for k, side in enumerate(sides):
        cv2.rectangle(img, (left, y + 4), (left + 14, y + 14), colors[k % len(colors)], -1)
        cv2.putText(img, side, (left + 20, y + 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        y += 18
    return img


def _bench_images(spec: str, images_dir: str | None) -> dict[str, np.ndarray]:
    from edge.io import read_image
    from edge.scenes import EVAL_SEED_START, generate_scene

    if images_dir:
        files = sorted(p for p in Path(images_dir).iterdir() if p.is_file())
        return {p.stem: read_image(p) for p in files}
    out = {}
    for k, size in enumerate(s for s in spec.split(",") if s):
        w, h = (int(v) for v in size.lower().split("x"))
        out[f"scene{k}"] = generate_scene(EVAL_SEED_START + 700_000 + k, w, h).image
    return out


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fastsam-edge bench``."""
    p.add_argument("--bundle", help="bundle directory (default: the embedded demo bundle)")
    p.add_argument("--images", help="folder of images (default: built-in synthetic scenes)")
    p.add_argument(
        "--sizes",
        default="640x480,1920x1080",
        help="built-in scene sizes WxH, comma-separated (default 640x480,1920x1080)",
    )
    p.add_argument("--masks", default="20,100,300", help="target mask counts (default 20,100,300)")
    p.add_argument("--precisions", default="fp32,int8", help="edge precisions (default fp32,int8)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads (all sides)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per configuration (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    p.add_argument(
        "--compare-reference",
        metavar="WEIGHTS.pt",
        help="also run ultralytics FastSAM on these weights and on the bundle's ONNX "
        "(needs the export extra)",
    )
    p.add_argument("--out", default="bench-results", help="output directory (JSON + Markdown)")


def cmd_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench``: run, write ``bench.json`` and ``bench.md``, print the table."""
    from edge.demo import demo_bundle
    from edge.io import atomic_write_bytes, atomic_write_image, atomic_write_json

    bundle = str(args.bundle or demo_bundle())
    report = run_bench(
        bundle,
        _bench_images(args.sizes, args.images),
        [int(v) for v in args.masks.split(",") if v],
        [v for v in args.precisions.split(",") if v],
        args.threads,
        args.runs,
        args.warmup,
        args.compare_reference,
    )
    out = Path(args.out)
    atomic_write_json(out / "bench.json", report)
    table = to_markdown(report)
    atomic_write_bytes(out / "bench.md", table.encode())
    atomic_write_image(out / "bench.png", draw_plot(report))
    print(table)
    print(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'bench.png'}")
    return 0


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edge.bench worker")
    p.add_argument("--bundle", required=True)
    p.add_argument("--precision", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--conf", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)
    res = run_edge_worker(a.bundle, a.precision, a.image, a.conf, a.threads, a.runs, a.warmup)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit("usage: python -m edge.bench worker ... (use `fastsam-edge bench`)")
