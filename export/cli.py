"""``fastsam-export`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from edge.cliargs import (
    add_global_options,
    add_json_option,
    check_parent,
    emit_json,
    warn_deprecated,
)
from edge.errors import FastSAMEdgeError
from export.common import ExportError

if TYPE_CHECKING:
    from export.clip import ClipOptions


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastsam-export``."""
    p = argparse.ArgumentParser(
        prog="fastsam-export",
        description="Export FastSAM weights (.pt) to a fastsam-edge bundle (ONNX + manifest).",
    )
    p.add_argument(
        "weights",
        nargs="?",
        help="FastSAM checkpoint, e.g. FastSAM-s.pt (omit with --calibrate-text to update the "
        "existing bundle --out)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="bundle directory to create (replaced atomically; its parent must exist)",
    )
    p.add_argument(
        "--precision",
        metavar="LIST",
        help="detector precisions: fp32,int8 (default) or fp32 (same as --no-int8)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--imgsz",
        default="640",
        help="input size: N (square) or WxH like a camera mode, e.g. 640x480 (default 640)",
    )
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic input shape: reference-exact rectangular letterbox inside --imgsz",
    )
    p.add_argument(
        "--calib-images",
        metavar="DIR",
        help="int8 calibration images, ideally frames from the target camera "
        "(default: built-in synthetic scenes)",
    )
    p.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    p.add_argument(
        "--int8-calibration",
        choices=["minmax", "percentile", "entropy"],
        default="minmax",
        help="activation calibration method (default minmax)",
    )
    p.add_argument(
        "--int8-float-branches",
        default=None,
        help="head branches whose last conv stays float: cv2 box, cv3 score, cv4 mask "
        "coefficients (default cv3,cv4; YOLOE: cv3 embeddings, cv5 coefficients, default "
        "cv3,cv5; empty string for none)",
    )
    p.add_argument(
        "--calib-count",
        type=int,
        default=32,
        help="calibration images read (default 32); every other one is held out for the int8 "
        "check unless --verify-images is given",
    )
    p.add_argument(
        "--verify-images",
        metavar="DIR",
        help="held-out images for the int8 check (default: every other calibration image, "
        "not calibrated on)",
    )
    p.add_argument(
        "--int8-plan",
        choices=["search", "fixed"],
        default="search",
        help="search (default): the cheapest per-block precision plan that reaches "
        "--int8-target within --int8-min-speedup; fixed: the single recipe, refused below "
        "--int8-min-iou",
    )
    p.add_argument(
        "--int8-target",
        metavar="IOU[,LOSS]",
        default="0.97,1",
        help="what the int8 plan must reach on held-out images: mean mask IoU against fp32 "
        "both ways, and at most LOSS points of recall lost (default 0.97,1)",
    )
    p.add_argument(
        "--int8-min-speedup",
        type=float,
        default=1.3,
        help="speed floor: plans slower than this many times fp32 on this host are not taken "
        "(default 1.3)",
    )
    p.add_argument(
        "--int8-min-iou",
        type=float,
        default=0.95,
        help="--int8-plan fixed: refuse below this held-out mean mask IoU (default 0.95)",
    )
    clip = p.add_argument_group("CLIP (text prompts)")
    clip.add_argument(
        "--clip",
        metavar="MODEL",
        help="also export open_clip MODEL's image and text encoders for text prompts "
        "(FastSAM's is ViT-B-32-quickgelu)",
    )
    clip.add_argument(
        "--clip-pretrained",
        metavar="TAG|PATH",
        help="CLIP weights: an open_clip tag (e.g. openai; needs the network or the local "
        "cache) or a local checkpoint file; 'none' = random weights, for tests only",
    )
    clip.add_argument(
        "--clip-precision",
        choices=["all", "int8-only"],
        default="all",
        help="CLIP encoders to keep: fp32 and int8 (all, default) or int8 only",
    )
    clip.add_argument(
        "--calibrate-text",
        metavar="DIR",
        help="measure the text threshold (clip.text_threshold) on DIR: images plus words.json "
        '{"images": {"a.jpg": ["a mug", ...]}, "negatives": ["a dog", ...]} (docs/prompts.md)',
    )
    yoloe = p.add_argument_group("YOLOE (open vocabulary; YOLOE -seg checkpoints only)")
    yoloe.add_argument(
        "--vocab",
        metavar="WORDS",
        help='default vocabulary, comma-separated, e.g. "person,car,dog" (its embeddings '
        "are stored in the bundle)",
    )
    yoloe.add_argument(
        "--text-weights",
        metavar="FILE",
        help="the YOLOE text encoder as ultralytics names it: mobileclip_blt.ts (v8/11) or "
        "mobileclip2_b.ts (26); exported to ONNX so the Pi encodes new words",
    )
    yoloe.add_argument(
        "--text-from-bundle",
        metavar="DIR",
        help="take the text tower of this bundle's CLIP (its text ONNX and tokenizer, as they "
        "are) for a YOLOE trained on that CLIP's text embeddings (the demo YOLOE: "
        "scripts/train_yoloe_demo.py); instead of --text-weights",
    )
    yoloe.add_argument(
        "--vocab-embeddings",
        metavar="FILE.npy",
        help="raw (K, D) text embeddings of --vocab (ultralytics get_text_pe(names, "
        "without_reprta=True)), when there is no --text-weights",
    )
    p.add_argument("--name", help="bundle name (default: weights stem and size)")
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip measuring the peak memory per precision (bundle.json memory; the Pi "
        "service's MemoryMax comes from it)",
    )
    add_json_option(p, "a summary of the bundle")
    add_global_options(p, "fastsam-export", top=True)
    return p


def _resolve_precision(args: argparse.Namespace) -> None:
    """``--precision``: detector precisions; the old CLIP meaning warns and moves over."""
    value = args.precision
    if value is None:
        return
    if value in ("all", "int8-only"):  # 0.1 spelling: --precision was CLIP's
        warn_deprecated(f"--precision {value} (CLIP encoders)", f"--clip-precision {value}")
        args.clip_precision = value
        return
    precs = [v.strip() for v in value.split(",") if v.strip()]
    if not precs or any(v not in ("fp32", "int8") for v in precs) or "fp32" not in precs:
        raise ExportError(
            f"--precision: expected fp32,int8 or fp32 (the fp32 model is always built), "
            f"got {value!r}"
        )
    if "int8" not in precs:
        args.no_int8 = True


EXPORT_MODULES = frozenset(
    {"torch", "torchvision", "ultralytics", "onnx", "onnxslim", "open_clip", "onnxscript"}
)
"""Modules of the ``export`` extra: missing one means a runtime-only install."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastsam-export``; returns the exit code (0 ok, 2 bad input or export
    error, 4 cannot write, 141 output pipe closed)."""
    args = build_parser().parse_args(argv)
    level = "debug" if args.debug else (args.log_level or "info")
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(levelname)s %(message)s")
    try:
        return _main(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXPORT_MODULES:
            raise
        print(
            f"fastsam-export: error: {exc.name!r} is not installed: fastsam-export needs the "
            'export extra (torch, ultralytics, onnx, open-clip-torch): pip install -e ".[export]" '
            "on a workstation (a runtime-only install, e.g. on the Pi, has fastsam-edge only)",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        print(f"fastsam-export: error: {exc}", file=sys.stderr)
        return 4


def _main(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from export.fastsam import export_bundle

    try:
        _resolve_precision(args)
        if args.json not in (None, "-"):
            check_parent("--json", args.json)
        if args.weights is None:
            if not args.calibrate_text:
                raise ExportError("WEIGHTS: required (except with --calibrate-text alone)")
            from export.calibrate_text import calibrate_bundle

            measured = calibrate_bundle(args.out, args.calibrate_text)
            _print_calibration(measured, args.out)
            return 0
        check_parent("--out", args.out)
        clip = _clip_options(args)
        if args.calibrate_text:
            if not args.clip:
                raise ExportError(
                    "--calibrate-text needs --clip MODEL (or, for an existing bundle with CLIP, "
                    "no WEIGHTS: fastsam-export --calibrate-text DIR --out BUNDLE)"
                )
            from edge.textcal import load_samples

            load_samples(args.calibrate_text)  # a bad folder fails before the long export
        from export.quantize import DEFAULT_FLOAT_BRANCHES, QuantConfig
        from export.yoloe import INT8_RECIPE, export_yoloe_bundle, is_yoloe_checkpoint

        is_yoloe = is_yoloe_checkpoint(args.weights)
        given = args.int8_float_branches
        if given is None:
            branches = INT8_RECIPE["float_branches"] if is_yoloe else DEFAULT_FLOAT_BRANCHES
        else:
            branches = tuple(b.strip() for b in given.split(",") if b.strip())
        quant = QuantConfig(args.int8_calibration, True, branches, args.calib_count)

        plan = int8_plan_options(args)

        yoloe = _yoloe_options(args)
        if is_yoloe:
            if clip is not None or args.calibrate_text:
                raise ExportError(
                    "--clip/--calibrate-text: a YOLOE bundle finds its words itself (--vocab, "
                    "--text-weights); CLIP crop matching is for FastSAM bundles"
                )
            out = export_yoloe_bundle(
                args.weights, args.out, args.imgsz, args.dynamic, args.name, None, yoloe,
                not args.no_int8, args.calib_images, int8_min_iou=args.int8_min_iou,
                measure_memory=not args.no_memory,
                quant_config=quant, verify_images=args.verify_images,
                int8_plan=plan,
            )  # fmt: skip
        elif yoloe is not None:
            raise ExportError(
                "--vocab/--text-weights/--text-from-bundle/--vocab-embeddings: only for YOLOE -seg"
            )
        else:
            out = export_bundle(
                args.weights,
                args.out,
                imgsz=args.imgsz,
                dynamic=args.dynamic,
                name=args.name,
                clip=clip,
                int8=not args.no_int8,
                calib_images=args.calib_images,
                quant_config=quant,
                int8_min_iou=args.int8_min_iou,
                calibrate_text=args.calibrate_text,
                measure_memory=not args.no_memory,
                verify_images=args.verify_images,
                int8_plan=plan,
            )
    except FastSAMEdgeError as exc:
        print(f"fastsam-export: error: {exc}", file=sys.stderr)
        return 2
    from edge.bundle import read_manifest

    m = read_manifest(out)
    calibrated = m.clip.text_threshold_calibration if m.clip is not None else None
    if args.json is not None:
        emit_json("--json", args.json, {"bundle": str(out), "manifest": m.to_dict()})
        if args.json == "-":
            return 0
    h, w = m.input.imgsz
    shape = f"dynamic (letterbox inside H={h} W={w})" if m.input.dynamic else f"H={h} W={w}"
    if m.memory is not None:
        from export.memory import format_profile

        print(format_profile(m.memory))
    print(f"bundle: {out}")
    print(f"input shape: {shape}")
    print(f"files: {', '.join(sorted(m.files))}")
    clip = m.clip
    if clip is not None:
        v = clip.verify
        cos = ", ".join(
            f"{k} {v[k]['cosine_min']:.5f}"
            for k in sorted(v)
            if isinstance(v[k], dict) and "cosine_min" in v[k]
        )
        print(f"clip: {clip.model} {list(clip.precisions)}; cosine vs torch: {cos}")
    if m.yoloe is not None:
        y = m.yoloe
        tower = (
            f"text tower {y.text.model} {list(y.text.precisions)}" if y.text else "no text tower"
        )
        print(
            f"yoloe: family {y.family}, D={y.embed_dim}, vocabulary {list(y.vocabulary)}, {tower}"
        )
    if calibrated is not None:
        _print_calibration(calibrated, out)
    return 0


def int8_plan_options(args: argparse.Namespace) -> Any:
    """The int8 plan options of ``--int8-plan/--int8-target/--int8-min-speedup``, checked
    (with ``--calib-count`` and ``--verify-images``) before the long export.

    Raises:
        ExportError: A bad value, naming its flag.
    """
    from pathlib import Path

    from edge.bundle import Int8Target
    from export.int8plan import PlanOptions

    parts = [v.strip() for v in str(args.int8_target).split(",")]
    try:
        if not 1 <= len(parts) <= 2:
            raise ValueError
        iou = float(parts[0])
        loss = float(parts[1]) if len(parts) == 2 else 1.0
    except ValueError:
        raise ExportError(
            f"--int8-target: expected IOU or IOU,LOSS_PT (e.g. 0.97,1), got {args.int8_target!r}"
        ) from None
    if not 0 < iou <= 1 or not 0 <= loss <= 100:
        raise ExportError(
            f"--int8-target: IOU must be in (0, 1] and LOSS_PT in [0, 100], got "
            f"{args.int8_target!r}"
        )
    if not args.int8_min_speedup > 0:
        raise ExportError(f"--int8-min-speedup: must be > 0, got {args.int8_min_speedup}")
    if not 0 < args.int8_min_iou <= 1:
        raise ExportError(f"--int8-min-iou: must be in (0, 1], got {args.int8_min_iou}")
    if args.calib_count < (1 if args.verify_images else 2):
        raise ExportError(
            f"--calib-count: {args.calib_count} is too few: every other image is held out for "
            "the int8 check, so give at least 2 (or --verify-images DIR)"
        )
    if args.verify_images is not None and not Path(args.verify_images).is_dir():
        raise ExportError(f"--verify-images: {args.verify_images!r} is not a directory")
    target = Int8Target(iou, loss / 100, args.int8_min_speedup)
    return PlanOptions(mode=args.int8_plan, target=target)


def _yoloe_options(args: argparse.Namespace) -> Any:
    """The YOLOE part of the command line (``None`` when none of its flags is given)."""
    if not (args.vocab or args.text_weights or args.vocab_embeddings or args.text_from_bundle):
        return None
    from export.yoloe import YoloeOptions

    words = tuple(w.strip() for w in (args.vocab or "").split(",") if w.strip())
    return YoloeOptions(
        vocab=words,
        text_weights=args.text_weights,
        vocab_embeddings=args.vocab_embeddings,
        text_from=args.text_from_bundle,
    )


def _print_calibration(measured: dict[str, Any], bundle: Any) -> None:
    print(
        f"text threshold: {measured['threshold']} (balanced accuracy "
        f"{measured['balanced_accuracy']:.3f} on {measured['images']} images; "
        f"{measured['matching']['count']} matching, {measured['non_matching']['count']} "
        f"non-matching words) -> {bundle}/bundle.json clip.text_threshold"
    )


def _clip_options(args: argparse.Namespace) -> ClipOptions | None:
    """``export_bundle``'s CLIP options for ``--clip`` (``None`` without); checks the flags
    first."""

    if not args.clip:
        if args.clip_pretrained is not None or args.clip_precision != "all":
            raise ExportError("--clip-pretrained and --clip-precision int8-only need --clip MODEL")
        return None
    if args.clip_pretrained is None:
        raise ExportError(
            f"--clip {args.clip} needs --clip-pretrained TAG|PATH (e.g. openai, or a local "
            "checkpoint file; 'none' for random weights in tests)"
        )
    from export.clip import ClipOptions, check_clip_args

    check_clip_args(args.clip, args.clip_pretrained)  # a bad model/file/tag fails before export
    return ClipOptions(args.clip, args.clip_pretrained, keep_fp32=args.clip_precision == "all")


if __name__ == "__main__":
    sys.exit(main())
