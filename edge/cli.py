"""``fastsam-edge`` command line: segment, info, bench, serve, doctor, install-service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.errors import FastSAMEdgeError, InputError


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


def _parse_cli_prompts(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(flag, prompt)`` from ``--point``/``--box``/``--text``/``--prompts`` (frame-independent).

    Order: one PointPrompt (all ``--point``), one BoxPrompt (all ``--box``), one TextPrompt per
    ``--text``, then the entries of ``--prompts``; errors name the flag and the value.
    """
    from edge.prompts import BoxPrompt, PointPrompt, TextPrompt, parse_prompts

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
    return tagged


def _check_prompts(tagged: list[tuple[str, Any]], image_hw: tuple[int, int]) -> Any:
    """The prompts, checked against the frame size once (errors name the flag); the
    segmenter does not check them again."""
    from edge.prompts import CheckedPrompts, check_prompts

    for flag, prompt in tagged:
        try:
            check_prompts(prompt, image_hw)
        except InputError as exc:
            raise InputError(f"{flag}: {exc}") from None
    return CheckedPrompts([p for _, p in tagged], image_hw)


def _text_threshold(value: str) -> float | None:
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        t = float(value)
    except ValueError:
        t = float("nan")
    if not -1.0 <= t <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a cosine similarity in [-1, 1] or 'none', got {value!r}"
        )
    return t


def _summary(name: str, result: Any) -> str:
    t = result.timings
    stages = ", ".join(
        f"{k} {t[k]:.1f} ms"
        for k in ("load_clip", "preprocess", "infer", "postprocess", "prompt")
        if k in t
    )
    return f"{name}: {len(result)} masks | {stages}"


def _swallowed(argv: list[str], flag: str, value: str, specs: list[str]) -> bool:
    """Whether ``flag VALUE`` (two tokens, the flag possibly abbreviated) has a SOURCE after it.

    ``--json`` and ``--overlay`` take an optional value, so in ``--json a.png b.png`` argparse
    gives ``a.png`` to ``--json``: the user most likely meant it as a source.
    """
    for i, token in enumerate(argv[:-1]):
        if token == "--":
            return False
        if len(token) > 3 and flag.startswith(token) and argv[i + 1] == value:
            return any(t in specs for t in argv[i + 2 :])
    return False


def _check_value_not_a_source(
    flag: str, value: str, argv: list[str] | None, specs: list[str]
) -> None:
    """Refuse a ``--json``/``--overlay`` value that is an existing input, not an output.

    Raises:
        InputError: ``value`` exists and a SOURCE follows ``flag value`` on the command line
            (the flag took a source as its file), or ``--json`` names an existing image/video.
    """
    from edge.io import IMAGE_EXTS
    from edge.sources import VIDEO_EXTS

    path = Path(value)
    if not os.path.lexists(path):
        return
    if argv is not None and _swallowed(argv, flag, value, specs):
        fix = (
            "write --json - for stdout, or put --json FILE after the sources"
            if flag == "--json"
            else "put --overlay after the sources (no value with --out DIR, FILE for one image)"
        )
        raise InputError(
            f"{flag}: {value!r} exists and SOURCE arguments follow it: {flag} took it as its "
            f"output file and would overwrite it; {fix}, or write {flag}={value} to replace it"
        )
    if flag == "--json" and path.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS:
        raise InputError(
            f"--json: {value!r} is an existing image or video; JSON would replace it: "
            "choose a .json file name (or --json - for stdout)"
        )


class _SegmentOutputs:
    """Where ``segment`` writes: per-frame files under ``--out``, one ``--json`` document,
    an ``--overlay`` file, a ``--save-video`` per video source; all paths checked up front."""

    def __init__(
        self, args: argparse.Namespace, frames_hint: int | None, sources: list[Any]
    ) -> None:
        from edge.cliargs import check_parent, prepare_out_dir
        from edge.sources import check_outputs

        self.args = args
        self.fmt: str = args.format
        self.json: str | None = args.json
        video = any(s.video for s in sources)
        self.skipped = 0
        for flag, value in (("--json", args.json), ("--overlay", args.overlay)):
            if isinstance(value, str) and value != "-":
                _check_value_not_a_source(flag, value, getattr(args, "argv", None), args.sources)
        if self.json is not None and self.json != "-":
            check_parent("--json", self.json)
        overlay = args.overlay
        self.overlay_file: Path | None = None
        self.overlay_in_dir = overlay is True
        if isinstance(overlay, str):
            if frames_hint != 1:
                raise InputError(
                    "--overlay FILE: only for a single image; with several frames use "
                    "--out DIR --overlay (one overlay per frame)"
                )
            self.overlay_file = check_parent("--overlay", overlay)
        if (self.overlay_in_dir or args.save_video) and not args.out:
            flag = "--save-video" if args.save_video else "--overlay"
            raise InputError(f"{flag}: needs --out DIR (the folder to write into)")
        if args.save_video and not video:
            raise InputError("--save-video: needs a video source")
        files: list[tuple[str, Path]] = []
        if self.json is not None and self.json != "-":
            files += [("--json", Path(self.json)), ("--json", self._side_file(self.json))]
        if self.overlay_file is not None:
            files.append(("--overlay", self.overlay_file))
        out_dir = Path(args.out) if args.out else None
        check_outputs(sources, files, out_dir, self.overlay_in_dir or args.save_video)
        self.out: Path | None = prepare_out_dir("--out", args.out) if args.out else None
        self.count = 0
        self.docs: list[Any] = []  # kept only for the one --json document
        self.images: list[dict[str, Any]] = []
        self.names: tuple[str, ...] = ()  # the vocabulary (YOLOE): the COCO categories
        self.writers: dict[Path, tuple[Any, Any]] = {}

    @staticmethod
    def _side_file(json_path: str) -> Path:
        """The COCO ``images`` document written beside ``--json FILE`` for several frames."""
        return Path(json_path).with_suffix(".images.json")

    @property
    def per_frame_lines(self) -> bool:
        """One summary line per frame on stdout (else one closing line)."""
        return self.json is None and self.out is None

    def frame(self, frame: Any, result: Any, doc: Any, overlay: Any) -> None:
        from edge.io import atomic_write_image, atomic_write_json

        self.count += 1
        self.names = tuple(result.names) or self.names
        if self.json is not None:
            self.docs.append(doc)
        if self.out is not None:
            atomic_write_json(self.out / f"{frame.name}.json", doc)
            if self.overlay_in_dir and overlay is not None:
                atomic_write_image(self.out / f"{frame.name}.png", overlay)
        if self.overlay_file is not None and overlay is not None:
            atomic_write_image(self.overlay_file, overlay)
        if self.args.save_video and frame.video and overlay is not None:
            self._video_frame(frame, overlay)

    def _video_frame(self, frame: Any, overlay: Any) -> None:
        import cv2

        from edge.io import PendingFile

        path = frame.source.path
        if path not in self.writers:
            assert self.out is not None
            cap = cv2.VideoCapture(str(path))
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            cap.release()
            fps = max(fps / self.args.vid_stride, 1.0)
            # written to a temp file beside the target, renamed over it when complete
            pending = PendingFile(self.out / f"{path.stem}.overlay.mp4", suffix=".tmp.mp4")
            h, w = overlay.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            writer = cv2.VideoWriter(str(pending.path), fourcc, fps, (w, h))
            if not writer.isOpened():
                pending.discard()
                raise OSError(
                    f"--save-video: cannot write {str(pending.user_path)!r} (no mp4v encoder?)"
                )
            self.writers[path] = (writer, pending)
        self.writers[path][0].write(overlay)

    def close(self) -> None:
        """Finish the videos being written (also after an error: a playable partial file)."""
        for writer, pending in self.writers.values():
            writer.release()
            pending.commit()

    def finish(self) -> list[str]:
        """Write the one-document outputs; returns what was written."""
        from edge.cliargs import emit_json
        from edge.coco import categories
        from edge.io import atomic_write_json

        self.close()
        written = []
        single = len(self.docs) == 1 and not self.skipped
        if self.fmt == "coco":
            doc: Any = [ann for d in self.docs for ann in d]
            images = {"images": self.images, "categories": categories(self.names)}
            if self.out is not None:
                atomic_write_json(self.out / "images.json", images)
                written.append(str(self.out / "images.json"))
            if self.json is not None and self.json != "-" and not single:
                side = self._side_file(self.json)
                atomic_write_json(side, images)
                written.append(str(side))
        else:
            doc = self.docs[0] if single else self.docs
        if self.json is not None:
            written.insert(0, emit_json("--json", self.json, doc))
        if self.out is not None:
            written.append(f"{self.out}/ ({self.count} results)")
        if self.writers:
            written += [str(self.out / f"{p.stem}.overlay.mp4") for p in self.writers]
        return written


def cmd_segment(args: argparse.Namespace) -> int:
    """``segment SOURCE... [--bundle DIR] [--json [FILE|-]] [--out DIR] [prompts]``."""
    import time

    from tqdm import tqdm

    from edge.coco import coco_image, masks_to_coco
    from edge.demo import DEMO_BUNDLE_NOTICE, is_demo_name, looks_like_demo_scene, resolve_bundle
    from edge.encode import clean_mask
    from edge.marks import draw_prompt_marks
    from edge.overlay import draw_overlay
    from edge.result_schema import bundle_facts, result_to_dict
    from edge.segmenter import Segmenter
    from edge.sources import count_frames, expand_sources, iter_frames

    if args.vid_stride < 1:
        raise InputError(f"--vid-stride: expected a positive integer, got {args.vid_stride}")
    sources = expand_sources(args.sources)
    total = count_frames(sources, args.vid_stride)
    outputs = _SegmentOutputs(args, total, sources)
    tagged = _parse_cli_prompts(args)
    demo = args.bundle is None or is_demo_name(args.bundle)
    if demo and not all(looks_like_demo_scene(s.path.name) for s in sources):
        notice = DEMO_BUNDLE_NOTICE.format(flag="--bundle DIR")
        print(f"fastsam-edge: notice: {notice}", file=sys.stderr)
    seg = Segmenter.load(
        resolve_bundle(args.bundle), precision=args.precision, threads=args.threads
    )
    if args.clip_precision:
        seg.clip_precision = args.clip_precision
    if args.vocab is not None:
        seg.set_vocabulary([w for w in args.vocab.split(",") if w.strip()])
    text = {"prefilter": args.text_prefilter}
    if args.text_threshold is not _UNSET:
        text["threshold"] = args.text_threshold
    if args.text_shortlist is not None:
        text["shortlist"] = args.text_shortlist
    seg.text = replace(seg.text, **text)
    bundle = bundle_facts(seg)
    want_overlay = bool(args.overlay or args.save_video)
    tracker = None
    tracked_source: Any = None
    if args.track:
        from edge.track import Tracker, TrackerConfig

        try:
            track_cfg = TrackerConfig(
                min_frames=args.track_min_frames, max_missed=args.track_max_missed
            )
        except ValueError as exc:
            raise InputError(f"--track-{exc}".replace("_", "-", 1)) from None
    progress = tqdm(
        total=total,
        unit="frame",
        disable=args.no_progress or total == 1,
        file=sys.stderr,
        # a terminal that reports 0 columns (some ptys) would get an empty bar from tqdm
        ncols=min(shutil.get_terminal_size((100, 20)).columns, 120),
    )
    empty = masks = frames = 0
    skipped: list[str] = []

    def skip(source: Any, reason: str) -> None:
        skipped.append(str(source.path))
        outputs.skipped = len(skipped)
        tqdm.write(f"fastsam-edge: warning: skipping {reason}", file=sys.stderr)

    t_start = time.perf_counter()
    try:
        for frame in iter_frames(
            sources,
            args.vid_stride,
            max_pixels=args.max_pixels,
            # one file given: its error is the answer; several: report, skip, go on
            on_skip=skip if len(sources) > 1 else None,
        ):
            prompts = _check_prompts(tagged, frame.image.shape[:2])
            result = seg.segment(
                frame.image,
                conf=args.conf,
                iou=args.iou,
                max_det=args.max_det,
                prompt=prompts or None,
            )
            if args.min_region_area or args.fill_holes:
                result.crops = tuple(
                    clean_mask(c, args.min_region_area, args.fill_holes) for c in result.crops
                )
            if args.track:
                # one sequence per video; images (a folder, a glob) are one sequence together
                if tracker is None or (frame.video and frame.source != tracked_source):
                    tracker = Tracker(track_cfg)
                tracked_source = frame.source
                result = replace(
                    result,
                    track_id=tracker.update(result),
                    metadata={**result.metadata, "tracking": True},
                )
            frames += 1
            masks += len(result)
            empty += len(result) == 0
            label = frame.file_name
            for note in result.metadata.get("prompt_notes", []):
                tqdm.write(f"{label}: {note}", file=sys.stderr)
            h, w = result.image_hw
            if args.format == "coco":
                doc: Any = masks_to_coco(result, frame.image_id)
                outputs.images.append(coco_image(frame.image_id, frame.file_name, h, w))
            else:
                doc = result_to_dict(
                    result,
                    bundle=bundle,
                    frame_id=frame.index if frame.video else None,
                    polygon_epsilon=args.polygon_epsilon,
                    source=str(frame.source.path),
                )
            overlay = None
            if want_overlay:
                overlay = draw_overlay(
                    frame.image, result, labels="id+score" if args.labels else None
                )
                if prompts:
                    draw_prompt_marks(overlay, prompts)
            outputs.frame(frame, result, doc, overlay)
            if outputs.per_frame_lines or (total == 1 and outputs.json != "-"):
                tqdm.write(_summary(label, result), file=sys.stdout)
            progress.update(1)
    finally:
        progress.close()
        outputs.close()
    if skipped and not frames:
        raise InputError(
            f"source: none of the {len(sources)} files could be read (see the warnings above)"
        )
    written = outputs.finish()
    elapsed = time.perf_counter() - t_start
    if frames > 1 and outputs.json != "-":
        print(
            f"{frames} frames, {masks} masks, {empty} empty, {frames / elapsed:.1f} frames/s"
            + (f" | wrote {', '.join(written)}" if written else "")
        )
    elif written and outputs.json != "-":
        print(f"wrote {', '.join(written)}")
    if skipped:
        print(
            f"fastsam-edge: skipped {len(skipped)} of {len(sources)} files (unreadable, see "
            "the warnings above); the others were processed",
            file=sys.stderr,
        )
    if empty and args.fail_empty:
        print(
            f"fastsam-edge: {empty} of {frames} frames gave no mask (--fail-empty)",
            file=sys.stderr,
        )
    from edge.cliargs import EXIT_EMPTY, EXIT_SKIPPED

    return EXIT_SKIPPED if skipped else EXIT_EMPTY if empty and args.fail_empty else 0


def _int8_lines(quant: Any) -> list[str]:
    """``info``'s int8 lines: the check (held-out, or an old bundle's in-sample one) and the
    precision plan."""
    if quant is None:
        return []
    lines = []
    held = quant.held_out
    for key in ("verify", "verify_host"):
        v = getattr(quant, key)
        if not v:
            continue
        # bundles from before the reference check carry one host-kernel row
        what = {"reference": "reference", "host": "export host"}.get(
            v.get("kernels"), "export host (no CPU-independent check)"
        )
        cls = (v.get("cpu_class") or {}).get("name")
        if held is not None:
            where = f"held-out, {held.images} images"
        else:
            where = f"in-sample, {v.get('images', '?')} calibration images (old bundle)"
        line = (
            f"int8 check:  {what}{f' ({cls})' if cls else ''}, {where}: mean mask IoU "
            f"{v['mean_iou_fp32_to_int8']:.3f} / {v['mean_iou_int8_to_fp32']:.3f}"
        )
        if "recall_loss" in v:
            line += f", recall loss {100 * v['recall_loss']:.1f} pt ({v.get('recall_basis')})"
        elif "recall_int8" in v:
            line += f", recall {v['recall_fp32']:.3f} -> {v['recall_int8']:.3f}"
        if key == "verify" and "speedup" in v:
            line += f", {v['speedup']:.2f}x fp32 on the export host"
        lines.append(line)
    plan = quant.plan
    if plan is not None:
        t = plan.target
        verdict = "meets" if plan.meets_target else "misses"
        screened = sum(c.images is not None for c in plan.tried)
        floor = f">= {t.min_speedup:g}x fp32" if plan.speed_floor else "no speed floor there"
        lines.append(
            f"int8 plan:   {plan.mode}: {plan.chosen or 'none'} ({verdict} {t.describe()}, "
            + floor
            + f"; {len(plan.tried)} candidate{'s' if len(plan.tried) != 1 else ''} tried"
            + (f", {screened} screened out on a few images" if screened else "")
            + ")"
        )
        for b in plan.float_blocks:
            cost = f", +{b.speed_cost_ms:g} ms" if b.speed_cost_ms is not None else ""
            lines.append(f"int8 float:  {b.block} ({b.nodes} nodes{cost}): {b.reason}")
    if quant.status and not quant.ok:
        lines.append(f"int8 status: {quant.status}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    """``info [--bundle DIR]``: bundle facts and available providers."""
    import onnxruntime as ort

    from edge.bundle import read_manifest, verify_file
    from edge.demo import resolve_bundle

    args.bundle = resolve_bundle(args.bundle)
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
    if args.json is not None:
        from edge.cliargs import emit_json

        emit_json("--json", args.json, info)
    if args.json != "-":
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
        if m.yoloe is not None:
            y = m.yoloe
            words = ", ".join(y.vocabulary) if y.vocabulary else "(none: set one with --vocab)"
            print(
                f"yoloe:       family {y.family} ({'end-to-end, top-k' if y.end2end else 'NMS'}"
                f"), embedding size {y.embed_dim}"
            )
            print(f"vocabulary:  {words}")
        if m.memory is not None:
            peaks = "; ".join(
                f"{p} " + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(row.items()))
                for p, row in sorted(m.memory.peak_mib.items())
            )
            print(f"peak memory: {peaks} (measured at export, {m.memory.machine})")
        for line in _int8_lines(m.quantization):
            print(line)
        print(
            f"onnxruntime: {ort.__version__}, "
            f"providers: {', '.join(ort.get_available_providers())}"
        )
        print(f"int8 cpu:    {cpu.describe()}")
    return 0 if all(v == "ok" for v in status.values()) else 1


def _text_support(m: Any) -> dict[str, Any]:
    """Whether the bundle answers text prompts and what is missing for them here."""
    from edge.bundle import NO_CLIP_HINT
    from edge.tokenizer import TEXT_EXTRA_HINT, missing_text_deps

    if m.yoloe is not None:
        text = m.yoloe.text
        if text is None:
            summary = (
                "YOLOE: words only with caller-given embeddings (no text tower; re-export "
                "with --text-weights)"
            )
            return {"supported": False, "missing": [], "summary": summary}
        missing = missing_text_deps()
        summary = f"YOLOE: every instance of a phrase (text tower {text.model})"
        if missing:
            summary += f", but {', '.join(missing)} not installed: {TEXT_EXTRA_HINT}"
        return {"supported": True, "missing": missing, "summary": summary}
    if not m.has_text:
        return {"supported": False, "missing": [], "summary": f"not supported: {NO_CLIP_HINT}"}
    missing = missing_text_deps()
    model = m.clip.model
    if missing:
        summary = (
            f"supported by the bundle ({model}), but {', '.join(missing)} not installed: "
            f"{TEXT_EXTRA_HINT} (on a Pi: sudo scripts/install_pi.sh --text)"
        )
    else:
        summary = f"supported ({model}; tokenizer packages installed)"
    dense = m.clip.dense is not None
    summary += (
        "; prefilter: dense (one CLIP pass ranks every mask)"
        if dense
        else "; prefilter: score (top 32 by detection score; a ViT has no dense map)"
    )
    return {"supported": True, "missing": missing, "summary": summary, "dense_prefilter": dense}


_UNSET: Any = object()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastsam-edge``."""
    from edge.cliargs import add_global_options, add_json_option, int_arg
    from edge.prefilter import DENSE_SHORTLIST, TEXT_PREFILTERS

    p = argparse.ArgumentParser(
        prog="fastsam-edge",
        description="FastSAM on the edge. Exit codes: 0 ok, 1 a check failed (info, doctor), "
        "2 bad input/bundle/config, 3 empty result with --fail-empty, 4 cannot write output, "
        "5 some sources unreadable (skipped, the rest processed), 130 interrupted (Ctrl-C), "
        "141 output pipe closed.",
    )
    add_global_options(p, "fastsam-edge", top=True)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "segment",
        help="segment images, folders, globs or videos",
        description="Segment every frame of the sources with the same prompts. Without --json "
        "and --out, one summary line per frame goes to stdout.",
    )
    s.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="image file, folder (its images and videos), glob ('frames/*.jpg', '**' recurses) "
        "or video file (OpenCV)",
    )
    s.add_argument(
        "--bundle",
        help='model bundle directory, or an embedded demo: "demo" (FastSAM, the default) or '
        '"demo-yoloe" (open vocabulary)',
    )
    add_json_option(s, "the result (one frame) or the list of results (several frames)")
    s.add_argument(
        "--out",
        metavar="DIR",
        help="write one result per frame into DIR (NAME.json; with --overlay also NAME.png; "
        "coco: also images.json); DIR is created, its parents are not",
    )
    s.add_argument(
        "--overlay",
        nargs="?",
        const=True,
        metavar="FILE",
        help="overlay image: FILE for a single image, or no value with --out DIR",
    )
    s.add_argument(
        "--format",
        choices=["fastsam", "coco"],
        default="fastsam",
        help="fastsam: result schema v1 (docs/result-schema.md); coco: COCO results list "
        "(image_id, category_id, bbox xywh, score, segmentation RLE) for pycocotools",
    )
    s.add_argument(
        "--vid-stride", type=int, default=1, metavar="N", help="video: every N-th frame (1)"
    )
    s.add_argument(
        "--save-video",
        action="store_true",
        help="video: also write the overlays as DIR/NAME.overlay.mp4 (needs --out)",
    )
    s.add_argument("--labels", action="store_true", help="overlay: mask ids and scores")
    s.add_argument(
        "--track",
        action="store_true",
        help="track objects across the frames (a video; images of a folder or glob in name "
        "order as one sequence): track_id per mask, overlays coloured by track",
    )
    s.add_argument(
        "--track-min-frames",
        type=int,
        default=2,
        metavar="N",
        help="--track: frames in a row before a new object gets its id (2)",
    )
    s.add_argument(
        "--track-max-missed",
        type=int,
        default=5,
        metavar="N",
        help="--track: frames an unseen object keeps its id (5)",
    )
    s.add_argument("--fail-empty", action="store_true", help="exit 3 when a frame gives no mask")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    s.add_argument(
        "--precision", choices=["fp32", "int8"], help="detector precision (default: the bundle's)"
    )
    s.add_argument(
        "--clip-precision",
        choices=["fp32", "int8"],
        help="CLIP precision (default: the detector's where the bundle has it, else the bundle's)",
    )
    s.add_argument("--conf", type=float, help="score threshold (default: the bundle's, 0.4)")
    s.add_argument("--iou", type=float, help="NMS IoU threshold (default: the bundle's, 0.9)")
    s.add_argument("--max-det", type=int, help="maximum masks (default: the bundle's, 300)")
    s.add_argument(
        "--threads",
        type=int_arg("--threads", " (thread sweeps are for bench)"),
        help="onnxruntime threads (default: all cores)",
    )
    s.add_argument(
        "--max-pixels",
        type=positive_int,
        default=50_000_000,
        help="refuse images and video frames with more pixels (read from the file header "
        "before decoding; default 50000000)",
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
        help="text prompt (a CLIP bundle: the best-matching mask; a YOLOE bundle: every "
        "instance of the phrase); repeatable",
    )
    s.add_argument(
        "--vocab",
        metavar="WORDS",
        help='YOLOE bundles: the words to find, comma-separated, e.g. "person,dog" (default: '
        "the bundle's vocabulary)",
    )
    s.add_argument(
        "--text-threshold",
        type=_text_threshold,
        default=_UNSET,
        metavar="T|none",
        help="minimum CLIP similarity of a text prompt's best mask, else no mask (default: "
        "the bundle's measured clip.text_threshold; none = always the best mask)",
    )
    s.add_argument(
        "--text-prefilter",
        choices=list(TEXT_PREFILTERS),
        default="auto",
        help="which masks CLIP encodes for a text prompt: dense = rank every mask by one CLIP "
        "pass over the frame, encode the --text-shortlist best (conv towers such as MobileCLIP); "
        "score = the 32 best by detection score; auto = dense where the bundle has it",
    )
    s.add_argument(
        "--text-shortlist",
        type=positive_int,
        metavar="N",
        help=f"crops CLIP encodes per text with the dense prefilter (default {DENSE_SHORTLIST})",
    )
    s.add_argument(
        "--prompts",
        metavar="FILE.json",
        help='prompt list, e.g. [{"type": "point", "data": [x, y], "label": 1}, '
        '{"type": "box", "data": [x1, y1, x2, y2]}, {"type": "text", "data": "a cup", '
        '"threshold": 0.2}]',
    )
    s.set_defaults(func=cmd_segment)

    i = sub.add_parser("info", help="print bundle facts and onnxruntime providers")
    i.add_argument(
        "--bundle",
        help='model bundle directory, or an embedded demo: "demo" (FastSAM, the default) or '
        '"demo-yoloe" (open vocabulary)',
    )
    add_json_option(i, "the facts")
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

    sc = sub.add_parser(
        "scenes",
        help="write demo scenes (PNG) and their COCO ground truth (annotations.json)",
    )
    sc.add_argument("out", metavar="DIR", help="folder to write (created, its parents are not)")
    sc.add_argument("--count", type=int_arg("--count"), default=10, help="scenes (10)")
    sc.add_argument("--size", default="320x320", metavar="WxH", help="scene size (320x320)")
    sc.add_argument(
        "--seed",
        type=int,
        default=None,
        help="first seed (default: held-out evaluation seeds, never trained on)",
    )
    sc.set_defaults(func=cmd_scenes)

    for sp in sub.choices.values():
        add_global_options(sp, "fastsam-edge", top=False)
    return p


def cmd_scenes(args: argparse.Namespace) -> int:
    """``scenes DIR``: demo scenes + COCO ground truth, for trying ``segment`` and COCOeval."""
    from edge.cliargs import prepare_out_dir
    from edge.coco import scenes_to_coco
    from edge.demo.scenes import EVAL_SEED_START, save_scenes
    from edge.io import atomic_write_json

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size: expected WxH, got {args.size!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise InputError(f"--size: each side must be 16..8192 px, got {args.size!r}")
    seed = EVAL_SEED_START + 800_000 if args.seed is None else args.seed
    out = prepare_out_dir("out", args.out)
    paths = save_scenes(out, seed, args.count, w, h)
    from edge.demo.scenes import iter_scenes

    gt = scenes_to_coco(iter_scenes(seed, args.count, w, h), [p.name for p in paths])
    atomic_write_json(out / "annotations.json", gt)
    print(
        f"wrote {len(paths)} scenes ({w}x{h}, seeds {seed}..{seed + args.count - 1}) and "
        f"{out / 'annotations.json'} ({len(gt['annotations'])} instances)"
    )
    return 0


def _configure_logging(args: argparse.Namespace) -> None:
    level = "debug" if args.debug else (args.log_level or "warning")
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(levelname)s %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fastsam-edge``; returns the exit code (table in the README)."""
    from edge.cliargs import (
        EXIT_BAD_INPUT,
        EXIT_BROKEN_PIPE,
        EXIT_INTERRUPTED,
        EXIT_OUTPUT,
    )

    args = build_parser().parse_args(argv)
    # the command line as typed: `segment` checks what --json / --overlay took as their value
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(args)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `fastsam-edge info ... | head`: the reader left; end quietly, like a SIGPIPE'd tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("fastsam-edge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FastSAMEdgeError as exc:
        print(f"fastsam-edge: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"fastsam-edge: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
