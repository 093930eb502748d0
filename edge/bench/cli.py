"""``fastsam-edge bench``: arguments, the built-in images and the output files."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.worker import PROMPT_MODES
from edge.cliargs import DeprecatedAlias, add_json_option
from edge.errors import InputError


def parse_threads(spec: str, cores: int | None = None) -> list[int]:
    """Thread counts from ``"all"`` (1..cores), ``"1-4"``, ``"1,2,4"`` or ``"2"``.

    Raises:
        ValueError: Not a positive count, or an empty/reversed range.
    """
    cores = cores or os.cpu_count() or 1
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(1, cores + 1))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo < 1 or hi < lo:
                    raise ValueError
                out += range(lo, hi + 1)
            else:
                out.append(int(part))
        except ValueError:
            raise InputError(
                f"threads: expected 'all', N, 'A-B' or 'A,B,...' (positive), got {spec!r}"
            ) from None
    if not out or min(out) < 1:
        raise InputError(f"threads: expected positive counts, got {spec!r}")
    return sorted(set(out))


def _counts(name: str, text: str) -> list[int]:
    """``"10,100"`` -> [10, 100]; anything else is an :class:`InputError` naming the flag."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise InputError(f"{name}: expected positive counts, got {text!r}")
    return values


def bench_images(sizes: str, images_dir: str | None) -> dict[str, np.ndarray]:
    """The user's images (every file OpenCV reads in ``images_dir``) or built-in scenes.

    Raises:
        InputError: An unreadable image, or an empty folder.
        ValueError: A malformed size.
    """
    from edge.demo.scenes import EVAL_SEED_START, generate_scene
    from edge.errors import InputError
    from edge.io import read_image

    if images_dir:
        files = sorted(p for p in Path(images_dir).iterdir() if p.is_file())
        if not files:
            raise InputError(f"images: no files in {images_dir!r}")
        return {p.stem: read_image(p) for p in files}
    out = {}
    for k, size in enumerate(s for s in sizes.split(",") if s):
        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise InputError(f"sizes: expected WxH[,WxH...], got {size!r}") from None
        out[f"scene{w}x{h}"] = generate_scene(EVAL_SEED_START + 700_000 + k, w, h).image
    return out


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``fastsam-edge bench``."""
    p.add_argument(
        "--bundle",
        action="append",
        help="bundle directory; repeat for an input-size sweep (default: the demo bundle)",
    )
    p.add_argument("--images", help="folder of images (default: built-in synthetic scenes)")
    p.add_argument(
        "--sizes", default="640x480", help="built-in scene sizes WxH, comma-separated (640x480)"
    )
    p.add_argument("--masks", default="100", help="target mask counts, e.g. 20,100,300 (100)")
    p.add_argument(
        "--precision",
        default="fp32,int8",
        metavar="LIST",
        help="detector precisions to sweep, e.g. fp32,int8 or int8 (fp32,int8)",
    )
    p.add_argument(
        "--precisions",
        dest="precision",
        action=DeprecatedAlias,
        new="--precision",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--threads", default="all", help="thread sweep: all (1..cores), 1-4, 1,2,4 or N (all)"
    )
    p.add_argument(
        "--modes",
        default=",".join(PROMPT_MODES),
        help="prompt modes: everything (swept over threads), point, box, text (at the most "
        "threads; text only for bundles with CLIP) (default: all four)",
    )
    p.add_argument("--text", default="a red circle", help="text of the text mode")
    p.add_argument("--runs", type=int, default=10, help="timed runs per configuration (10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up runs (2)")
    p.add_argument(
        "--sustained",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then run the recommended configuration this long, sampling temperature/clock",
    )
    p.add_argument(
        "--target-fps",
        type=float,
        default=1.0,
        help="the recommendation takes the largest input reaching this rate (1.0)",
    )
    p.add_argument("--no-peak", action="store_true", help="skip the MatMul peak measurement")
    p.add_argument(
        "--compare-reference",
        metavar="WEIGHTS.pt",
        action="append",
        help="also run ultralytics FastSAM on these weights and on the bundle's ONNX, and "
        "compare masks (workstation; needs the export extra); once for all bundles, or once "
        "per --bundle in the same order",
    )
    p.add_argument(
        "--service-replay",
        action="append",
        metavar="DIR",
        help="service mode: run the camera service's pipeline (replay source, every frame, "
        "results with overlay written and fsynced to a temp dir under --out) on this folder of "
        "JPEGs, next to segment-only on the same frames decoded once; repeat for more folders. "
        "Uses --bundle (the first), --precision, --masks and the most --threads",
    )
    p.add_argument(
        "--vocab-sizes",
        metavar="K,K,...",
        help="open-vocabulary mode: time a frame of the first --bundle (a YOLOE bundle) with "
        "K words each (e.g. 1,5,20), against K=1 and against a second --bundle's (FastSAM) "
        "everything mode, and a new word's text-tower call; uses the first --precision, "
        "the most --threads, --runs and the first --sizes scene (or --images' first image)",
    )
    p.add_argument(
        "--track-sequence",
        nargs="?",
        const="1000000,1000001,1000002",
        metavar="SEEDS",
        help="tracking mode: id consistency and id switches on generated moving-objects "
        "sequences (seeds, default 1000000,1000001,1000002), and the tracker's cost at "
        "--masks (the first) masks a frame against the segmentation's. Uses --bundle (the "
        "first), --precision (the first), --sizes (the first) and the most --threads",
    )
    p.add_argument(
        "--track-frames", type=int, default=60, help="tracking mode: frames per sequence (60)"
    )
    p.add_argument(
        "--stream-fps",
        metavar="LIST",
        help="tracking mode: also the end-to-end latency of an MJPEG camera on 127.0.0.1 "
        "through the service at these source.fps, e.g. 1,5",
    )
    p.add_argument(
        "--stream-seconds",
        type=float,
        default=20.0,
        help="tracking mode: seconds per --stream-fps rate (20)",
    )
    p.add_argument(
        "--text-cost",
        action="store_true",
        help="text-prompt mode: for the first --bundle (with CLIP), everything mode vs a text "
        "prompt with a new word each call vs a second word on the same frame (ratios), and the "
        "peak RSS of that process; plus the agreement of the text choice with the all-masks "
        "choice on busy demo scenes of --text-agreement. Uses the first --precision, --sizes "
        "and --masks, the most --threads and --runs",
    )
    p.add_argument(
        "--text-agreement",
        metavar="BUNDLE",
        help="text-prompt mode: the bundle whose CLIP and detector are trained on the demo "
        "world, for the agreement row (default: the demo bundle; 'none' skips it)",
    )
    p.add_argument(
        "--text-scenes",
        type=int,
        default=30,
        help="text-prompt mode: busy demo scenes for the agreement (30)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="service mode: alternating segment-only / service runs per row (2)",
    )
    p.add_argument(
        "--out",
        default="bench-results",
        help="output directory (bench-results; created, its parents are not)",
    )
    add_json_option(p, "the full report (also written to OUT/bench.json)")


def cmd_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench``: run; write bench.json, bench.md (compact), bench-full.md,
    bench.png (+ sustained.png)."""
    from edge.bench.report import draw_plot, draw_sustained, to_markdown
    from edge.bench.run import BenchPlan, run_bench
    from edge.cliargs import check_parent, prepare_out_dir
    from edge.demo import demo_bundle
    from edge.io import atomic_write_bytes, atomic_write_image

    if args.service_replay:
        return _cmd_service_bench(args)
    if args.vocab_sizes:
        return _cmd_vocab_bench(args)
    if args.track_sequence is not None:
        return _cmd_track_bench(args)
    if args.text_cost:
        return _cmd_text_bench(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in PROMPT_MODES]
    if bad or not modes:
        raise InputError(f"modes: expected some of {list(PROMPT_MODES)}, got {args.modes!r}")
    for name in ("runs", "warmup"):
        if getattr(args, name) < (1 if name == "runs" else 0):
            raise InputError(f"{name}: too small: {getattr(args, name)}")
    check_parent("--out", args.out)
    if args.json not in (None, "-"):
        check_parent("--json", args.json)
    bundles = [str(b) for b in (args.bundle or [demo_bundle()])]
    refs = args.compare_reference or []
    if len(refs) not in (0, 1, len(bundles)):
        raise InputError(
            f"--compare-reference: give it once or once per --bundle ({len(bundles)}), "
            f"got {len(refs)}"
        )
    plan = BenchPlan(
        bundles=bundles,
        images=bench_images(args.sizes, args.images),
        mask_targets=_counts("masks", args.masks),
        precisions=[v for v in args.precision.split(",") if v],
        threads=parse_threads(args.threads),
        modes=modes,
        runs=args.runs,
        warmup=args.warmup,
        text=args.text,
        sustained_s=args.sustained,
        target_fps=args.target_fps,
        peak=not args.no_peak,
        reference_weights=dict(
            zip(bundles, refs * len(bundles) if len(refs) == 1 else refs, strict=False)
        ),  # fmt: skip
    )
    report = run_bench(plan)
    out = prepare_out_dir("--out", args.out)
    atomic_write_bytes(out / "bench-full.md", to_markdown(report, full=True).encode())
    atomic_write_image(out / "bench.png", draw_plot(report))
    also = ["bench-full.md", "bench.png"]
    if report.get("sustained"):
        atomic_write_image(out / "sustained.png", draw_sustained(report["sustained"]))
        also.append("sustained.png")
    return _write_report(args, out, "bench", report, to_markdown(report), also)


def _cmd_vocab_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench --vocab-sizes 1,5,20 --bundle YOLOE [--bundle FASTSAM]``:
    write vocab.json / vocab.md."""
    from edge.bench.vocab import run_vocab_bench, vocab_markdown
    from edge.cliargs import check_parent, prepare_out_dir

    sizes = _counts("vocab-sizes", args.vocab_sizes)
    if not args.bundle:
        raise InputError("--vocab-sizes: needs --bundle YOLOE_BUNDLE (then a FastSAM --bundle)")
    if args.json not in (None, "-"):
        check_parent("--json", args.json)
    image = next(iter(bench_images(args.sizes.split(",")[0], args.images).values()))
    precision = [v for v in args.precision.split(",") if v][0]
    report = run_vocab_bench(
        str(args.bundle[0]),
        image,
        sizes,
        precision=precision,
        threads=max(parse_threads(args.threads)),
        runs=args.runs,
        warmup=args.warmup,
        fastsam_bundle=str(args.bundle[1]) if len(args.bundle) > 1 else None,
    )
    out = prepare_out_dir("--out", args.out)
    table = vocab_markdown(report)
    return _write_report(args, out, "vocab", report, table)


def _cmd_text_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench --text-cost --bundle B``: write text.json / text.md."""
    import tempfile

    from edge.bench.run import choose_confs
    from edge.bench.text import measure_text_cost, text_agreement, text_markdown
    from edge.cliargs import check_parent, prepare_out_dir
    from edge.demo import demo_bundle
    from edge.io import atomic_write_image

    if args.runs < 1 or args.text_scenes < 1:
        raise InputError(f"runs / text-scenes: too small: {args.runs} / {args.text_scenes}")
    if args.json not in (None, "-"):
        check_parent("--json", args.json)
    bundle = str((args.bundle or [demo_bundle()])[0])
    image = next(iter(bench_images(args.sizes.split(",")[0], args.images).values()))
    precision = next((v for v in args.precision.split(",") if v), "int8")
    threads = max(parse_threads(args.threads))
    target = _counts("masks", args.masks)[0]
    out = prepare_out_dir("--out", args.out)
    conf = choose_confs(bundle, image, [target], threads, precision)[target]
    with tempfile.TemporaryDirectory(prefix="fastsam-text-bench-") as tmp:
        frame = Path(tmp) / "frame.png"
        atomic_write_image(frame, image)
        timed = measure_text_cost(bundle, str(frame), conf, precision, threads, args.runs)
    report: dict[str, Any] = {"time": timed, "conf": conf, "target_masks": target}
    agree = args.text_agreement or str(demo_bundle())
    if agree != "none":
        report["agreement"] = text_agreement(agree, args.text_scenes, threads)
    return _write_report(args, out, "text", report, text_markdown(report))


def _write_report(
    args: argparse.Namespace,
    out: Path,
    stem: str,
    report: dict[str, Any],
    table: str,
    also: Sequence[str] = (),
) -> int:
    """Write ``STEM.json`` and ``STEM.md`` into ``out``, ``--json`` if asked, and print the table
    (unless the JSON goes to stdout) and the files written (``also``: further files the caller
    wrote into ``out``); the exit code of a bench that ran."""
    from edge.cliargs import emit_json
    from edge.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / f"{stem}.json", report)
    atomic_write_bytes(out / f"{stem}.md", table.encode())
    if args.json is not None:
        emit_json("--json", args.json, report)
    if args.json != "-":
        print(table)
        written = [f"{stem}.json", f"{stem}.md", *also]
        print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0


def _cmd_service_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench --service-replay DIR``: write service.json / service.md."""
    from edge.bench.service import run_service_bench, service_markdown
    from edge.cliargs import check_parent, prepare_out_dir
    from edge.demo import demo_bundle

    if args.rounds < 1:
        raise InputError(f"rounds: too small: {args.rounds}")
    targets = _counts("masks", args.masks)
    if args.json not in (None, "-"):
        check_parent("--json", args.json)
    out = prepare_out_dir("--out", args.out)
    report = run_service_bench(
        bundle=str((args.bundle or [demo_bundle()])[0]),
        folders=list(args.service_replay),
        targets=targets,
        precisions=[v for v in args.precision.split(",") if v],
        threads=max(parse_threads(args.threads)),
        rounds=args.rounds,
        out_root=out,
    )
    table = service_markdown(report)
    return _write_report(args, out, "service", report, table)


def _cmd_track_bench(args: argparse.Namespace) -> int:
    """``fastsam-edge bench --track-sequence [SEEDS]``: write track.json / track.md."""
    from edge.bench.track import run_track_bench, track_markdown
    from edge.cliargs import check_parent, prepare_out_dir
    from edge.demo import demo_bundle

    seeds = _counts("track-sequence", args.track_sequence.replace(" ", ""))
    if args.track_frames < 2:
        raise InputError(f"track-frames: too small: {args.track_frames}")
    try:
        w, h = (int(v) for v in args.sizes.split(",")[0].lower().split("x"))
    except ValueError:
        raise InputError(f"sizes: expected WxH, got {args.sizes!r}") from None
    if args.json not in (None, "-"):
        check_parent("--json", args.json)
    out = prepare_out_dir("--out", args.out)
    bundle = str((args.bundle or [demo_bundle()])[0])
    precision = next((v for v in args.precision.split(",") if v), None)
    threads = max(parse_threads(args.threads))
    report = run_track_bench(
        bundle, seeds, args.track_frames, (w, h), _counts("masks", args.masks)[0], precision,
        threads,
    )  # fmt: skip
    if args.stream_fps:
        from edge.bench.stream import run_stream_latency

        try:
            rates = [float(v) for v in args.stream_fps.split(",") if v.strip()]
        except ValueError:
            rates = []
        if not rates or min(rates) <= 0:
            raise InputError(f"stream-fps: expected positive rates, got {args.stream_fps!r}")
        report["stream"] = run_stream_latency(
            bundle, rates, args.stream_seconds, precision=precision, threads=threads
        )
    table = track_markdown(report)
    return _write_report(args, out, "track", report, table)
