"""``fastsam-edge`` command line: segment, info, bench, serve, doctor, install-service."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.errors import FastSAMEdgeError, InputError


def _bundle_facts(seg: Any) -> dict[str, Any]:
    name = seg.manifest.detector_file(seg.precision)
    return {
        "name": seg.manifest.name,
        "sha256": seg.manifest.files[name].sha256,
        "precision": seg.precision,
    }


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--threads 0`` is a usage error, not a traceback)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _numbers(flag: str, value: str, counts: tuple[int, ...], form: str) -> list[float]:
    try:
        nums = [float(v) for v in value.split(",")]
    except ValueError:
        nums = []
    if len(nums) not in counts:
        raise InputError(f"{flag}: expected {form}, got {value!r}")
    return nums


def _cli_prompts(args: argparse.Namespace, image_hw: tuple[int, int]) -> list[Any]:
    """Prompts from ``--point``/``--box``/``--text``/``--prompts``, checked against the image.

    Order: one PointPrompt (all ``--point``), one BoxPrompt (all ``--box``), one TextPrompt per
    ``--text``, then the entries of ``--prompts``; errors name the flag and the value.
    """
    from edge.prompts import BoxPrompt, PointPrompt, TextPrompt, parse_prompts, validate_prompt

    tagged: list[tuple[str, Any]] = []
    if args.point:
        points, labels = [], []
        for v in args.point:
            nums = _numbers("--point", v, (2, 3), "X,Y[,LABEL]")
            label = nums[2] if len(nums) == 3 else 1
            if label not in (0, 1):
                raise InputError(f"--point: LABEL must be 0 or 1, got {v!r}")
            points.append(nums[:2])
            labels.append(int(label))
        point = PointPrompt(points, labels, args.point_mode)
        tagged.append((f"--point {' '.join(args.point)!r}", point))
    if args.box:
        boxes = [_numbers("--box", v, (4,), "X1,Y1,X2,Y2") for v in args.box]
        tagged.append((f"--box {' '.join(args.box)!r}", BoxPrompt(boxes)))
    tagged += [(f"--text {t!r}", TextPrompt(t)) for t in args.text or []]
    if args.prompts:
        from edge.paths import describe_path_kind

        path = Path(args.prompts)
        kind = describe_path_kind(path)  # checked first: reading a FIFO would block
        if kind is not None:
            raise InputError(f"--prompts {str(path)!r}: cannot read: it {kind}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"--prompts {str(path)!r}: cannot read: {exc.strerror}") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise InputError(f"--prompts {str(path)!r}: invalid JSON: {exc}") from None
        except RecursionError:
            raise InputError(f"--prompts {str(path)!r}: JSON nested too deeply") from None
        try:
            parsed = parse_prompts(obj)
        except InputError as exc:
            raise InputError(f"--prompts {str(path)!r}: {exc}") from None
        tagged += [(f"--prompts {str(path)!r} entry {i}", p) for i, p in enumerate(parsed)]
    for flag, prompt in tagged:
        try:
            validate_prompt(prompt, image_hw)
        except InputError as exc:
            raise InputError(f"{flag}: {exc}") from None
    return [p for _, p in tagged]


def cmd_segment(args: argparse.Namespace) -> int:
    """``segment IMAGE --bundle DIR --json OUT [--overlay PNG] [prompts]``."""
    from edge.encode import clean_mask
    from edge.io import atomic_write_image, atomic_write_json, read_image
    from edge.overlay import draw_overlay
    from edge.report import result_to_dict
    from edge.segmenter import Segmenter

    image = read_image(args.image, max_pixels=args.max_pixels)
    prompts = _cli_prompts(args, image.shape[:2])
    seg = Segmenter.load(args.bundle, precision=args.precision, threads=args.threads)
    result = seg.segment(
        image, conf=args.conf, iou=args.iou, max_det=args.max_det, prompt=prompts or None
    )
    if args.min_region_area or args.fill_holes:
        result.crops = tuple(
            clean_mask(c, args.min_region_area, args.fill_holes) for c in result.crops
        )
    doc = result_to_dict(
        result,
        bundle=_bundle_facts(seg),
        polygon_epsilon=args.polygon_epsilon,
        source=str(args.image),
    )
    atomic_write_json(args.json, doc)
    if args.overlay:
        atomic_write_image(args.overlay, draw_overlay(image, result))
    t = result.timings
    print(
        f"{len(result)} masks | preprocess {t['preprocess']:.1f} ms, infer {t['infer']:.1f} ms, "
        f"postprocess {t['postprocess']:.1f} ms"
        + (f", prompt {t['prompt']:.1f} ms" if "prompt" in t else "")
        + f" | json: {args.json}"
        + (f" | overlay: {args.overlay}" if args.overlay else "")
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``info --bundle DIR``: bundle facts and available providers."""
    import onnxruntime as ort

    from edge.bundle import read_manifest, verify_file

    m = read_manifest(args.bundle)
    status = {}
    for name in sorted(m.files):
        try:
            verify_file(args.bundle, m, name)
            status[name] = "ok"
        except FastSAMEdgeError as exc:
            status[name] = f"BAD: {exc}"
    from edge.cpu import int8_class

    cpu = int8_class()
    info = {
        "bundle": str(Path(args.bundle).absolute()),
        "manifest": m.to_dict(),
        "file_check": status,
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "text_prompts": _text_support(m),
        "int8_class": cpu.to_dict(),
    }
    if args.as_json:
        print(json.dumps(info, indent=2))
    else:
        h, w = m.input.imgsz
        print(f"name:        {m.name}")
        shape = f"dynamic, letterbox inside H={h} W={w}" if m.input.dynamic else f"H={h} W={w}"
        print(f"input:       {shape} (stride {m.input.stride})")
        print(f"precisions:  {', '.join(m.precisions)} (default {m.default_precision})")
        print(
            f"thresholds:  conf {m.thresholds.conf}, iou {m.thresholds.iou}, "
            f"max_det {m.thresholds.max_det}"
        )
        print(f"opset:       {m.opset}")
        src = m.source
        print(
            f"source:      {src.get('weights')} ({src.get('architecture')}, "
            f"sha256 {str(src.get('sha256'))[:12]}…)"
        )
        for name, st in status.items():
            print(f"file:        {name} ({m.files[name].bytes} bytes) {st}")
        print(f"text:        {info['text_prompts']['summary']}")
        if m.memory is not None:
            peaks = "; ".join(
                f"{p} " + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(row.items()))
                for p, row in sorted(m.memory.peak_mib.items())
            )
            print(f"peak memory: {peaks} (measured at export, {m.memory.machine})")
        quant = m.extra.get("quantization") or {}
        for key in ("verify", "verify_host"):
            v = quant.get(key)
            if v:
                # bundles from before the reference check carry one host-kernel row
                what = {"reference": "reference", "host": "export host"}.get(
                    v.get("kernels"), "export host (no CPU-independent check)"
                )
                cls = (v.get("cpu_class") or {}).get("name")
                print(
                    f"int8 check:  {what}{f' ({cls})' if cls else ''}: mean mask IoU "
                    f"{v['mean_iou_fp32_to_int8']:.3f} / {v['mean_iou_int8_to_fp32']:.3f}"
                    + (f", recall {v['recall_fp32']:.3f} -> {v['recall_int8']:.3f}"
                       if "recall_int8" in v else "")
                )  # fmt: skip
        print(
            f"onnxruntime: {ort.__version__}, "
            f"providers: {', '.join(ort.get_available_providers())}"
        )
        print(f"int8 cpu:    {cpu.describe()}")
    return 0 if all(v == "ok" for v in status.values()) else 1


def _text_support(m: Any) -> dict[str, Any]:
    """Whether the bundle answers text prompts and what is missing for them here."""
    from edge.clip import NO_CLIP_HINT
    from edge.tokenizer import TEXT_EXTRA_HINT, missing_text_deps

    if not m.has_text:
        return {"supported": False, "missing": [], "summary": f"not supported: {NO_CLIP_HINT}"}
    missing = missing_text_deps()
    model = m.extra["clip"].get("model", "CLIP")
    if missing:
        summary = (
            f"supported by the bundle ({model}), but {', '.join(missing)} not installed: "
            f"{TEXT_EXTRA_HINT} (on a Pi: sudo scripts/install_pi.sh --text)"
        )
    else:
        summary = f"supported ({model}; tokenizer packages installed)"
    return {"supported": True, "missing": missing, "summary": summary}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastsam-edge``."""
    p = argparse.ArgumentParser(prog="fastsam-edge", description="FastSAM on the edge.")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment one image")
    s.add_argument("image", help="image file (any format OpenCV reads)")
    s.add_argument("--bundle", required=True, help="model bundle directory")
    s.add_argument("--json", required=True, help="result JSON to write")
    s.add_argument("--overlay", help="overlay image to write (PNG/JPEG)")
    s.add_argument("--precision", choices=["fp32", "int8"], help="default: the bundle's")
    s.add_argument("--conf", type=float, help="score threshold (default: the bundle's, 0.4)")
    s.add_argument("--iou", type=float, help="NMS IoU threshold (default: the bundle's, 0.9)")
    s.add_argument("--max-det", type=int, help="maximum masks (default: the bundle's, 300)")
    s.add_argument("--threads", type=positive_int, help="onnxruntime threads (default: all cores)")
    s.add_argument(
        "--max-pixels",
        type=positive_int,
        default=50_000_000,
        help="refuse images with more pixels (read from the file header before decoding; "
        "default 50000000)",
    )
    s.add_argument(
        "--min-region-area", type=int, default=0, help="drop mask regions smaller than this (px)"
    )
    s.add_argument("--fill-holes", action="store_true", help="fill holes in masks")
    s.add_argument(
        "--polygon-epsilon", type=float, default=0.0, help="polygon simplification (px)"
    )
    s.add_argument(
        "--point",
        action="append",
        metavar="X,Y[,LABEL]",
        help="point prompt in source pixels, LABEL 1 (default) = foreground, 0 = background; "
        "repeatable, all points form one prompt (docs/prompts.md)",
    )
    s.add_argument(
        "--point-mode",
        choices=["reference", "official", "best"],
        default="reference",
        help="reference: masks with a positive and no negative point (ultralytics); official: "
        "one merged mask (FastSAM repo); best: the smallest such mask (default: reference)",
    )
    s.add_argument(
        "--box",
        action="append",
        metavar="X1,Y1,X2,Y2",
        help="box prompt in source pixels (best-IoU mask per box); repeatable, one prompt",
    )
    s.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        help="text prompt (needs a CLIP bundle); repeatable",
    )
    s.add_argument(
        "--prompts",
        metavar="FILE.json",
        help='prompt list, e.g. [{"type": "point", "data": [x, y], "label": 1}, '
        '{"type": "box", "data": [x1, y1, x2, y2]}, {"type": "text", "data": "a cup"}]',
    )
    s.set_defaults(func=cmd_segment)

    i = sub.add_parser("info", help="print bundle facts and onnxruntime providers")
    i.add_argument("--bundle", required=True, help="model bundle directory")
    i.add_argument("--json", dest="as_json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    from edge.bench import add_bench_arguments, cmd_bench

    b = sub.add_parser(
        "bench",
        help="latency and memory, side by side (fp32, int8, optionally the ultralytics reference)",
    )
    add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)

    from edge.service.cli import add_service_commands  # serve, doctor, install-service

    add_service_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastsam-edge``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args))
    except FastSAMEdgeError as exc:
        print(f"fastsam-edge: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fastsam-edge: error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
