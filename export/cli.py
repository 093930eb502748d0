"""``fastsam-export`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from edge.errors import FastSAMEdgeError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastsam-export``."""
    p = argparse.ArgumentParser(
        prog="fastsam-export",
        description="Export FastSAM weights (.pt) to a fastsam-edge model bundle (ONNX + manifest).",
    )
    p.add_argument("weights", help="FastSAM checkpoint, e.g. FastSAM-s.pt")
    p.add_argument("--out", required=True, help="bundle directory to create (replaced atomically)")
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
    p.add_argument("--name", help="bundle name (default: weights stem and size)")
    p.add_argument("--debug", action="store_true", help="verbose logging")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastsam-export``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s"
    )
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from export.fastsam import ExportError, export_bundle

    try:
        out = export_bundle(args.weights, args.out, imgsz=args.imgsz, dynamic=args.dynamic, name=args.name)
    except (ExportError, FastSAMEdgeError) as exc:
        print(f"fastsam-export: error: {exc}", file=sys.stderr)
        return 2
    from edge.bundle import read_manifest

    m = read_manifest(out)
    h, w = m.input.imgsz
    shape = f"dynamic (letterbox inside H={h} W={w})" if m.input.dynamic else f"H={h} W={w}"
    print(f"bundle: {out}")
    print(f"input shape: {shape}")
    print(f"files: {', '.join(sorted(m.files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
