"""``fastsam-edge bench --service-replay DIR``: the camera service's pipeline against the core.

For each replay folder (JPEG or other image files) and target mask count, in one process and
side by side (alternating, ``rounds`` times, so drift in load hits both alike):

* **segment-only**: the folder's frames decoded once, then ``Segmenter.segment`` on each; the
  rate is frames over the summed segmentation time;
* **service**: the real :class:`~edge.service.runner.Service` on a replay source of the same
  folder (frames read and decoded by the service, every frame triggered, each result written
  with its overlay into a temporary directory: temp file, fsync, rename), at the service's
  output defaults (RLE + polygons for every mask, JPEG overlay at ``output.jpeg_quality``);
  the rate is steady-state results per second (between the first and the last result), and
  every stage (read, queue wait, segment, output) gets its percentiles.

Both sides use the same loaded segmenter and the same conf (chosen so the frames give about
the target mask count). The service keeps the frames at the folder's size
(``processing.max_mask_side = 0``) and keeps every mask (``processing.max_masks = 0``) so that
both sides segment the same pixels and return the same masks.

A last table shows that the cost of the RLE follows the masks, not the frame: the masks of the
first frame encoded in their own frame and pasted at the same place into a 3840x2160 frame.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.worker import percentiles

SCHEMA_VERSION = 1
STAGES = ("read", "queue_wait", "segment", "output")
BIG_FRAME_HW = (2160, 3840)


def replay_files(folder: str | Path) -> list[Path]:
    """The image files of a replay folder, sorted by name (what the replay source reads).

    Raises:
        InputError: Not a folder, or no images in it.
    """
    from edge.errors import InputError
    from edge.io import IMAGE_EXTS

    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"--service-replay: {str(path)!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"--service-replay: no images in {str(path)!r}")
    return files


def write_scene_replay(
    folder: str | Path, width: int, height: int, frames: int, seed: int = 0, quality: int = 90
) -> list[Path]:
    """Write ``frames`` generated demo scenes as JPEGs (a replay folder for this bench).

    Scenes from 640x480 up get 30-60 objects so that a low conf reaches ~100 masks with the
    demo bundle (smaller ones fewer: they cannot hold as many).
    """
    import cv2

    from edge.demo.scenes import EVAL_SEED_START, generate_scene
    from edge.io import atomic_write_bytes

    lo = max(3, min(30, width * height // 10_000))
    out = []
    for k in range(frames):
        scene = generate_scene(
            EVAL_SEED_START + 800_000 + seed * 1000 + k, width, height, lo, 2 * lo
        )
        ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OSError(f"cannot encode scene {k} as JPEG")
        out.append(atomic_write_bytes(Path(folder) / f"frame{k:04d}.jpg", buf.tobytes()))
    return out


def pick_conf(seg: Any, images: list[np.ndarray], target: int) -> float:
    """A conf giving about ``target`` masks: the median over frames of each frame's cut.

    A frame's cut is midway between its ``target``-th and next best score (of a run at conf
    0.001), or just under its last score when it has fewer detections.
    """
    cuts = []
    for image in images:
        scores = np.sort(seg.segment(image, conf=0.001).confidence)[::-1]
        if len(scores) == 0:
            continue
        if target >= len(scores):
            cuts.append(float(max(scores[-1] - 1e-4, 0.0)))
        else:
            cuts.append(float((scores[target - 1] + scores[target]) / 2))
    return float(np.median(cuts)) if cuts else 0.001


def segment_only(seg: Any, images: list[np.ndarray], conf: float) -> dict[str, Any]:
    """Segment each decoded frame once; rate = frames / summed segmentation time."""
    ms, masks = [], []
    for image in images:
        t0 = time.perf_counter()
        result = seg.segment(image, conf=conf)
        ms.append((time.perf_counter() - t0) * 1e3)
        masks.append(len(result))
    return {"fps": len(images) / (sum(ms) / 1e3), "segment_ms": ms, "masks": masks}


def service_run(
    seg: Any,
    bundle: str,
    folder: Path,
    conf: float,
    out_root: Path,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the service on a replay of ``folder`` until its end; stage samples and the rate.

    Args:
        seg: The loaded segmenter (shared with the segment-only side).
        bundle: Its bundle directory (for the configuration; the segmenter is not reloaded).
        folder: The replay folder.
        conf: Score threshold.
        out_root: Where the temporary result directory is made (a real disk: the writes are
            fsynced there).
        changes: Further dotted config overrides.
    """
    from edge.service.config import ServiceConfig
    from edge.service.runner import Service
    from edge.service.telemetry import Metrics

    with tempfile.TemporaryDirectory(prefix="service-bench-", dir=out_root) as tmp:
        cfg = ServiceConfig().replace(
            **{
                "model.bundle": bundle,
                "model.conf": conf,
                "model.warmup": False,
                "source.kind": "replay",
                "source.path": str(folder),
                "source.loop": False,
                "source.realtime": False,
                "trigger.interval.enabled": True,
                "trigger.interval.seconds": 0.0,
                "processing.max_mask_side": 0,
                "processing.max_masks": 0,
                "output.dir": tmp,
                "output.max_results": 0,
                "output.max_mb": 0.0,
                "output.min_free_mb": 0.0,
                "http.enabled": False,
                "service.status_interval_s": 0.0,
                **(changes or {}),
            }
        )
        metrics = Metrics(keep_samples=True)
        done: list[float] = []
        masks: list[int] = []

        def on_result(doc: dict[str, Any]) -> None:
            done.append(time.perf_counter())
            masks.append(int(doc["num_masks"]))

        svc = Service(cfg, segmenter=seg, metrics=metrics, on_result=on_result)
        summary = svc.run(install_signals=False)
        nbytes = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    if summary.errors or len(done) < 2:
        raise RuntimeError(
            f"service bench on {folder}: {len(done)} results, {summary.errors} errors "
            f"({summary.line()})"
        )
    return {
        "fps": (len(done) - 1) / (done[-1] - done[0]),
        "results": len(done),
        "masks": masks,
        "stages_ms": {
            s: [v * 1e3 for v in metrics.samples(f"fastsam_{s}_seconds")] for s in STAGES
        },
        "latency_ms": [v * 1e3 for v in metrics.samples("fastsam_latency_seconds")],
        "bytes_per_result": nbytes / len(done),
        "summary": summary.line(),
    }


def rle_scaling(result: Any, repeats: int = 9) -> dict[str, Any]:
    """RLE milliseconds per mask for the same masks in their frame and in a 3840x2160 frame.

    Also times the frame-sized way (paste into a full frame, then run-length) for contrast,
    once on at most 20 of the masks.
    """
    from edge.encode import encode_rles

    crops = [c for c in result.crops if c.shape[0] * c.shape[1]]
    h, w = result.image_hw
    out: dict[str, Any] = {"masks": len(crops), "mean_mask_px": 0.0, "rows": []}
    if not crops:
        return out
    out["mean_mask_px"] = float(np.mean([c.area for c in crops]))
    big = BIG_FRAME_HW
    frames = [(h, w)] + ([big] if big[0] >= h and big[1] >= w and big != (h, w) else [])
    # the two frame sizes alternate, so that drift in the machine's load hits both alike
    best = dict.fromkeys(frames, float("inf"))
    for _ in range(repeats):
        for fh, fw in frames:
            best[(fh, fw)] = min(best[(fh, fw)], _timed(encode_rles, crops, fh, fw))
    few = crops[:20]  # the frame-sized way costs a frame per mask: once, on at most 20 masks
    for fh, fw in frames:
        dense_ms = _timed(_frame_sized_rles, few, fh, fw) * len(crops) / len(few)
        out["rows"].append(
            {
                "frame": [fw, fh],
                "crop_ms_per_mask": best[(fh, fw)] / len(crops),
                "frame_sized_ms_per_mask": dense_ms / len(crops),
            }
        )
    return out


def _frame_sized_rles(crops: list[Any], height: int, width: int) -> list[str]:
    """The frame-sized way: paste each mask into a full frame, then run-length it."""
    from edge.encode import rle_counts, rle_string

    return [rle_string(rle_counts(c.dense(height, width))) for c in crops]


def _timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1e3


def run_service_bench(
    bundle: str,
    folders: list[str],
    targets: list[int],
    precisions: list[str],
    threads: int,
    rounds: int = 2,
    out_root: str | Path = ".",
    progress: Any = None,
) -> dict[str, Any]:
    """Measure every (folder, target): segment-only and service, alternating ``rounds`` times.

    Args:
        bundle: Bundle directory.
        folders: Replay folders.
        targets: Target mask counts.
        precisions: Detector precisions to run (those the bundle has; at least one).
        threads: onnxruntime threads.
        rounds: Alternating segment-only / service runs per row.
        out_root: Where the temporary result directories are made.
        progress: Called with one line per row (default: stderr).

    Returns:
        The JSON-able report: ``{"schema_version", "created", "machine", "bundle", "threads",
        "rounds", "rows": [...], "rle_scaling": [...]}``; each row has the precision, frame
        size, frames, mean masks, ``segment_only_fps``, ``service_fps``, their ratio,
        per-stage ``{"p50", "p90", "mean", ...}`` and ``output_over_segment`` (p50 over p50).

    Raises:
        ValueError: The bundle has none of ``precisions``.
    """
    from edge.bench.system import machine_facts
    from edge.bundle import read_manifest
    from edge.io import read_image
    from edge.segmenter import Segmenter

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    manifest = read_manifest(bundle)
    precs = [p for p in precisions if p in manifest.precisions]
    if not precs:
        raise ValueError(
            f"bundle {bundle!r} has none of the precisions {precisions} "
            f"(it has {manifest.precisions})"
        )
    Path(out_root).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    decoded = {folder: [read_image(p) for p in replay_files(folder)] for folder in folders}
    for precision in precs:
        seg = Segmenter.load(bundle, precision=precision, threads=threads)
        for folder in folders:
            rows += _folder_rows(seg, bundle, folder, decoded[folder], targets, rounds,
                                 Path(out_root), say)  # fmt: skip
    # the RLE table needs masks only: the first precision's, at the largest target
    seg = Segmenter.load(bundle, precision=precs[0], threads=threads)
    for folder, images in decoded.items():
        result = seg.segment(images[0], conf=pick_conf(seg, images[:1], max(targets)))
        scaling.append({"folder": str(folder), **rle_scaling(result)})
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_facts(),
        "bundle": {"dir": bundle, "name": manifest.name},
        "threads": threads,
        "rounds": rounds,
        "rows": rows,
        "rle_scaling": scaling,
    }


def _folder_rows(
    seg: Any,
    bundle: str,
    folder: str,
    images: list[np.ndarray],
    targets: list[int],
    rounds: int,
    out_root: Path,
    say: Any,
) -> list[dict[str, Any]]:
    """Rows of one (precision, folder): segment-only and service per target mask count."""
    rows = []
    seg.segment(images[0])  # warm-up
    for target in targets:
        conf = pick_conf(seg, images, target)
        seg_sides, svc_sides, staged_sides = [], [], []
        for k in range(rounds):
            seg_sides.append(segment_only(seg, images, conf))
            # serial and staged pipelines, their order alternating per round (load drifts)
            for pipeline in ("serial", "staged") if k % 2 == 0 else ("staged", "serial"):
                side = service_run(seg, bundle, Path(folder), conf, out_root,
                                   {"service.pipeline": pipeline})  # fmt: skip
                (svc_sides if pipeline == "serial" else staged_sides).append(side)
        seg_fps = statistics.median(s["fps"] for s in seg_sides)
        svc_fps = statistics.median(s["fps"] for s in svc_sides)
        staged_fps = statistics.median(s["fps"] for s in staged_sides)
        stages = {
            s: percentiles([v for side in svc_sides for v in side["stages_ms"][s]]) for s in STAGES
        }
        h, w = images[0].shape[:2]
        row = {
            "precision": seg.precision,
            "folder": str(folder),
            "frame": [w, h],
            "frames": len(images),
            "target_masks": target,
            "conf": conf,
            "masks": float(np.mean([m for side in svc_sides for m in side["masks"]])),
            "segment_only_fps": seg_fps,
            "segment_only_ms": percentiles([v for s in seg_sides for v in s["segment_ms"]]),
            "service_fps": svc_fps,
            "service_over_segment_only": svc_fps / seg_fps,
            "staged_fps": staged_fps,
            "staged_over_segment_only": staged_fps / seg_fps,
            "staged_over_serial": staged_fps / svc_fps,
            "staged_stages_ms": {
                s: percentiles([v for side in staged_sides for v in side["stages_ms"][s]])
                for s in STAGES
            },
            "staged_latency_ms": percentiles([v for s in staged_sides for v in s["latency_ms"]]),
            "stages_ms": stages,
            "latency_ms": percentiles([v for s in svc_sides for v in s["latency_ms"]]),
            "output_over_segment": stages["output"]["p50"] / stages["segment"]["p50"],
            "bytes_per_result": statistics.mean(s["bytes_per_result"] for s in svc_sides),
            "summary": svc_sides[-1]["summary"],
        }
        rows.append(row)
        say(
            f"service bench {seg.precision} {w}x{h} ~{target} masks: {row['masks']:.0f} masks, "
            f"service {svc_fps:.2f} fps (serial), {staged_fps:.2f} fps (staged) vs segment-only "
            f"{seg_fps:.2f} fps ({row['service_over_segment_only']:.2f}x, "
            f"{row['staged_over_segment_only']:.2f}x), output/segment "
            f"{row['output_over_segment']:.3f}"
        )
    return rows


def service_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (service vs segment-only; RLE cost per mask)."""
    b = report["bundle"]
    lines = [
        f"Service pipeline (serial and staged) vs segment-only: {b['name']}, "
        f"{report['threads']} thread(s), {report['rounds']} alternating round(s) per row; "
        "stage columns are the serial pipeline's.",
        "",
        "| precision | frame | ~masks | masks | frames | segment-only fps | serial fps | "
        "serial / segment-only | staged fps | staged / segment-only | read p50/p90 | "
        "queue wait p50/p90 | segment p50/p90 | output p50/p90 | output / segment | "
        "KB per result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        st = r["stages_ms"]
        cells = [f"{st[s]['p50']:.1f} / {st[s]['p90']:.1f}" for s in STAGES]
        lines.append(
            f"| {r['precision']} | {r['frame'][0]}x{r['frame'][1]} | {r['target_masks']} | "
            f"{r['masks']:.0f} | {r['frames']} | {r['segment_only_fps']:.2f} | "
            f"{r['service_fps']:.2f} | {r['service_over_segment_only']:.2f}x | "
            f"{r['staged_fps']:.2f} | {r['staged_over_segment_only']:.2f}x | "
            f"{' | '.join(cells)} | {r['output_over_segment']:.3f} | "
            f"{r['bytes_per_result'] / 1e3:.0f} |"
        )
    if report.get("rle_scaling"):
        lines += [
            "",
            "RLE cost per mask: the same masks in their own frame and in a 3840x2160 frame.",
            "",
            "| masks from | masks | mean mask px | frame | from crops ms/mask "
            "| frame-sized ms/mask |",
            "|---|---|---|---|---|---|",
        ]
        for s in report["rle_scaling"]:
            for row in s["rows"]:
                lines.append(
                    f"| {Path(s['folder']).name} | {s['masks']} | {s['mean_mask_px']:.0f} | "
                    f"{row['frame'][0]}x{row['frame'][1]} | {row['crop_ms_per_mask']:.3f} | "
                    f"{row['frame_sized_ms_per_mask']:.3f} |"
                )
    return "\n".join(lines) + "\n"
