"""The benchmark driver: plan the sweep, run each configuration in its own worker, derive.

Sweep order (so drift in load or temperature hits the sides being compared alike): per bundle
and image, per target mask count, per thread count, the precisions back to back; prompt modes
then run at the largest thread count; the reference sides (``--compare-reference``) last, next
to their own edge rows. Every timed configuration is a fresh process (``edge.bench.worker``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.system import board_state, machine_facts

SCHEMA_VERSION = 2
# Fewer threads win a tie: within this fraction of the fastest, leave cores to the camera/service
THREAD_TIE = 0.05


@dataclass
class BenchPlan:
    """What ``fastsam-edge bench`` measures.

    Attributes:
        bundles: Bundle directories (several = an input-size sweep).
        images: Name -> (H, W, 3) uint8 BGR image.
        mask_targets: Mask counts to reach by choosing conf per image (~20 / ~100 / ~300).
        precisions: Detector precisions to run where the bundle has them.
        threads: Thread counts (a sweep).
        modes: Prompt modes; ``everything`` is swept over threads, the others run at the
            largest thread count.
        runs: Timed runs per configuration.
        warmup: Untimed runs first.
        text: Text of the ``text`` mode.
        sustained_s: After the sweep, run the recommended configuration this long (0 = off).
        target_fps: The recommendation prefers the largest input whose best configuration
            reaches this rate.
        peak: Measure the MatMul peak (fp32, int8) for every thread count.
        reference_weights: ``--compare-reference`` FastSAM .pt per bundle directory (needs the
            export extra); bundles without one get no reference rows.
    """

    bundles: list[str]
    images: dict[str, np.ndarray]
    mask_targets: list[int] = field(default_factory=lambda: [100])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    threads: list[int] = field(default_factory=lambda: [os.cpu_count() or 1])
    modes: list[str] = field(default_factory=lambda: ["everything"])
    runs: int = 10
    warmup: int = 2
    text: str = "a red circle"
    sustained_s: float = 0.0
    target_fps: float = 1.0
    peak: bool = True
    reference_weights: dict[str, str] = field(default_factory=dict)


# The reference side of --compare-reference is a separate program from the workstation half
# (console script of the export extra), called through this command-line contract:
#   REFERENCE_COMMAND --model PT|ONNX --image PNG --imgsz N --conf C --threads T --runs R
#       --warmup W [--masks-out JSON]
# printing one JSON line in the edge worker's format. The runtime never imports it.
REFERENCE_COMMAND = "fastsam-bench-reference"


def _reference_program() -> list[str]:
    """The reference worker's command: next to this interpreter (a venv), else on PATH."""
    here = Path(sys.executable).parent / REFERENCE_COMMAND
    found = str(here) if here.is_file() else shutil.which(REFERENCE_COMMAND)
    if found is None:
        raise RuntimeError(
            f"--compare-reference needs `{REFERENCE_COMMAND}`, installed with the export extra "
            '(pip install "fastsam-edge[export]") on the machine that runs the bench'
        )
    return [found]


def spawn_worker(module: str, args: list[str], threads: int, timeout: float = 3600) -> dict:
    """Run a worker in a fresh process and parse its last stdout line as JSON.

    Args:
        module: ``"edge.bench.worker"`` (this interpreter, ``-m``) or :data:`REFERENCE_COMMAND`.
        args: Worker arguments.
        threads: ``OMP_NUM_THREADS`` of the worker.
        timeout: Seconds.
    """
    cmd = _reference_program() if module == REFERENCE_COMMAND else [sys.executable, "-m", module]
    proc = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def choose_confs(
    bundle: str, image: np.ndarray, targets: list[int], threads: int, precision: str
) -> dict[int, float]:
    """Conf thresholds that give about ``targets`` masks on ``image``.

    Each is the midpoint between the k-th and (k+1)-th best scores of a low-threshold run of
    ``precision``, so every side sees the same, unambiguous cut.
    """
    from edge.segmenter import Segmenter

    seg = Segmenter.load(bundle, precision=precision, threads=threads)
    scores = np.sort(seg.segment(image, conf=0.001, max_det=1000).confidence)[::-1]
    out = {}
    for k in targets:
        if k >= len(scores):
            out[k] = float(max(scores[-1] - 1e-4, 0.0)) if len(scores) else 0.001
        else:
            out[k] = float((scores[k - 1] + scores[k]) / 2)
    return out


def _derive(row: dict[str, Any], gop: float | None, peak: dict[str, dict[str, Any]]) -> None:
    """Add ratios to a row: (pre+post)/model, post ms per mask, achieved GOP/s vs peak."""
    st = {k: v["p50"] for k, v in row["stages_ms"].items()}
    pre_post = st.get("preprocess", 0.0) + st.get("postprocess", 0.0)
    row["pre_post_ms"] = pre_post
    row["pre_post_over_model"] = pre_post / max(st.get("infer", 0.0), 1e-9)
    row["postprocess_ms_per_mask"] = st.get("postprocess", 0.0) / max(row["masks"], 1)
    if "prompt" in st:
        row["prompt_over_model"] = st["prompt"] / max(st.get("infer", 0.0), 1e-9)
    if gop and row["side"] == "edge" and st.get("infer"):
        row["model_gops"] = gop / (st["infer"] / 1e3)
        ref = peak.get(row["precision"], {}).get(str(row["threads"]))
        if ref:
            row["model_pct_of_peak"] = 100 * row["model_gops"] / ref["gops"]


def recommend(rows: list[dict[str, Any]], target_fps: float) -> dict[str, Any] | None:
    """Precision, threads and input size from the everything-mode edge rows.

    Per bundle, the configuration with the lowest median end-to-end time wins, except that
    fewer threads win within :data:`THREAD_TIE` (cores left for the camera and the service).
    Across bundles: the largest input whose winner reaches ``target_fps`` (median), else the
    fastest bundle. Mask counts: the rows at the largest common target (the realistic load).

    Returns:
        ``{"bundle", "input", "precision", "threads", "end_to_end_ms", "fps", "reason",
        "per_bundle": [...], "serve": {config keys}}`` or ``None`` without edge rows.
    """
    edge = [r for r in rows if r["side"] == "edge" and r["mode"] == "everything"]
    if not edge:
        return None
    target = max(r["target_masks"] for r in edge)
    per_bundle = []
    for bundle in dict.fromkeys(r["bundle_dir"] for r in edge):
        cands = [r for r in edge if r["bundle_dir"] == bundle and r["target_masks"] == target]
        # one number per (precision, threads): the median over images
        table: dict[tuple[str, int], list[float]] = {}
        for r in cands:
            table.setdefault((r["precision"], r["threads"]), []).append(r["end_to_end_ms"]["p50"])
        ms = {k: float(np.median(v)) for k, v in table.items()}
        fastest = min(ms.values())
        ok = [k for k, v in ms.items() if v <= fastest * (1 + THREAD_TIE)]
        precision, threads = min(ok, key=lambda k: (k[1], ms[k]))
        row = next(r for r in cands if (r["precision"], r["threads"]) == (precision, threads))
        per_bundle.append(
            {
                "bundle": bundle,
                "input": row["input"],
                "precision": precision,
                "threads": threads,
                "end_to_end_ms": ms[(precision, threads)],
                "fps": 1e3 / ms[(precision, threads)],
                "alternatives_ms": {f"{p}/{t}": v for (p, t), v in sorted(ms.items())},
            }
        )
    meets = [b for b in per_bundle if b["fps"] >= target_fps]
    if meets:
        best = max(meets, key=lambda b: (b["input"][0] * b["input"][1], b["fps"]))
        reason = (
            f"largest input reaching {target_fps:g} FPS at ~{target} masks; "
            f"{best['precision']} with {best['threads']} thread(s) was the fastest there "
            f"(fewer threads win within {THREAD_TIE:.0%})"
        )
    else:
        best = max(per_bundle, key=lambda b: b["fps"])
        reason = f"no input reached {target_fps:g} FPS at ~{target} masks; the fastest is shown"
    return {
        **{k: best[k] for k in ("bundle", "input", "precision", "threads")},
        "end_to_end_ms": best["end_to_end_ms"],
        "fps": best["fps"],
        "target_masks": target,
        "target_fps": target_fps,
        "reason": reason,
        "per_bundle": per_bundle,
        "serve": {
            "model.bundle": best["bundle"],
            "model.precision": best["precision"],
            "model.threads": best["threads"],
        },
    }


REFERENCE_SIDES = ("ultralytics-pt", "ultralytics-onnx")


@dataclass(frozen=True)
class Job:
    """One measured configuration of one (bundle, image)."""

    target: int
    side: str
    precision: str
    threads: int
    mode: str


def plan_jobs(plan: BenchPlan, manifest: Any, with_reference: bool) -> list[Job]:
    """The configurations of one (bundle, image), in run order.

    Per target mask count: everything mode for every thread count with the precisions back to
    back (drift hits both alike), then each other prompt mode at the most threads, then the
    reference sides. The same list sizes the progress bar and drives the runs.
    """
    precs = [p for p in plan.precisions if p in manifest.precisions]
    top = max(plan.threads)
    modes = _modes_for(manifest, [m for m in plan.modes if m != "everything"])
    jobs: list[Job] = []
    for target in plan.mask_targets:
        if "everything" in plan.modes:
            jobs += [Job(target, "edge", p, t, "everything") for t in plan.threads for p in precs]
        jobs += [Job(target, "edge", p, top, m) for m in modes for p in precs]
        if with_reference:
            jobs += [Job(target, side, "fp32", top, "everything") for side in REFERENCE_SIDES]
    return jobs


def _worker_args(plan: BenchPlan, image: str, conf: float, threads: int) -> list[str]:
    """Arguments both workers (ours and the reference's) take."""
    return [
        "--image", image, "--conf", repr(conf), "--threads", str(threads),
        "--runs", str(plan.runs), "--warmup", str(plan.warmup),
    ]  # fmt: skip


def _edge_args(
    plan: BenchPlan, bundle: str, precision: str, image: str, conf: float, threads: int
) -> list[str]:
    return [
        "--bundle", bundle, "--precision", precision, "--text", plan.text,
        *_worker_args(plan, image, conf, threads),
    ]  # fmt: skip


def run_bench(plan: BenchPlan, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the plan; every configuration in its own process.

    Args:
        plan: What to measure.
        progress: Called with one line per finished configuration (default: a tqdm bar on
            stderr when tqdm is installed, else plain lines).

    Returns:
        The JSON-able report (schema in ``docs/bench-usage.md``).
    """
    from edge.bench.peak import matmul_peak
    from edge.bundle import read_manifest
    from edge.io import atomic_write_image
    from edge.preprocess import letterbox_geometry

    manifests = {b: read_manifest(b) for b in plan.bundles}
    for bundle, manifest in manifests.items():
        if not any(p in manifest.precisions for p in plan.precisions):
            raise ValueError(
                f"bundle {bundle!r} has none of the precisions {plan.precisions} "
                f"(it has {manifest.precisions})"
            )
    max_threads = max(plan.threads)
    jobs = {b: plan_jobs(plan, m, b in plan.reference_weights) for b, m in manifests.items()}
    todo = sum(map(len, jobs.values())) * len(plan.images) + bool(plan.sustained_s)
    bar = _progress_bar(todo) if progress is None else None

    def report_line(line: str) -> None:
        if progress is not None:
            progress(line)
        elif bar is not None:
            bar.set_postfix_str(line[:60])
            bar.update(1)
        else:
            print(line, file=sys.stderr, flush=True)

    notes = _mode_notes(manifests, plan.modes)
    for note in notes:
        print(f"bench: {note}", file=sys.stderr, flush=True)
    state_before = board_state()
    peak: dict[str, dict[str, Any]] = {}
    if plan.peak:
        for precision in ("fp32", "int8"):
            peak[precision] = {str(t): matmul_peak(precision, t) for t in plan.threads}

    rows: list[dict[str, Any]] = []
    ops: dict[str, dict[str, Any]] = {}
    agreement: list[dict[str, Any]] = []
    # (bundle, image, precision, target) -> conf, for the sustained run
    confs_used: dict[tuple[str, str, str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="fastsam-bench-") as tmp:
        for bundle, manifest in manifests.items():
            spec = manifest.input
            precs = [p for p in plan.precisions if p in manifest.precisions]
            ref_weights = plan.reference_weights.get(bundle)
            for name, image in plan.images.items():
                path = str(Path(tmp) / f"{name}.png")
                atomic_write_image(path, image)
                info = letterbox_geometry(image.shape[:2], spec.imgsz, spec.stride, spec.dynamic)
                key = f"{bundle}@{info.input_hw[1]}x{info.input_hw[0]}"
                if key not in ops:
                    ops[key] = _count_ops(bundle, manifest, info.input_hw, max_threads)
                # each precision gets the conf that gives it ~N masks (int8 scores differ a
                # little, and at high counts the cut sits in a dense band of scores); the
                # reference sides get the fp32 one
                confs = {
                    p: choose_confs(bundle, image, plan.mask_targets, max_threads, p)
                    for p in precs
                }
                confs_used.update(
                    ((bundle, name, p, t), c) for p, per in confs.items() for t, c in per.items()
                )
                ref_prec = "fp32" if "fp32" in confs else precs[0]
                common = {
                    "bundle": manifest.name,
                    "bundle_dir": bundle,
                    "input": [info.input_hw[1], info.input_hw[0]],
                    "image": name,
                    "image_wh": [int(image.shape[1]), int(image.shape[0])],
                }
                # masks of the max-thread everything runs, per target, for the agreement
                mask_files: dict[int, dict[str, str]] = {}
                for job in jobs[bundle]:
                    edge = job.side == "edge"
                    conf = confs[job.precision if edge else ref_prec][job.target]
                    keep_masks = bool(ref_weights) and job.mode == "everything"
                    keep_masks &= job.threads == max_threads
                    out = str(Path(tmp) / f"{name}-{job.target}-{job.side}-{job.precision}.json")
                    if edge:
                        args = _edge_args(plan, bundle, job.precision, path, conf, job.threads)
                        args += ["--mode", job.mode]
                        module = "edge.bench.worker"
                    else:
                        model = (
                            ref_weights
                            if job.side == "ultralytics-pt"
                            else str(Path(bundle) / manifest.detector_file("fp32"))
                        )
                        args = ["--model", str(model), "--imgsz", str(max(spec.imgsz)),
                                *_worker_args(plan, path, conf, job.threads)]  # fmt: skip
                        module = REFERENCE_COMMAND
                    if keep_masks:
                        args += ["--masks-out", out]
                        files = mask_files.setdefault(job.target, {})
                        files[job.precision if edge else job.side] = out
                    load_before = _load_average()
                    res = spawn_worker(module, args, job.threads)
                    row = {**common, "target_masks": job.target, "conf": conf,
                           "side": job.side, "precision": job.precision,
                           "threads": job.threads, "mode": job.mode,
                           "load_before": load_before, **res}  # fmt: skip
                    _derive(row, ops[key].get("gop"), peak)
                    rows.append(row)
                    report_line(
                        f"{manifest.name} {name} ~{job.target} {job.side} {job.precision} "
                        f"t{job.threads} {job.mode}: {res['masks']} masks, "
                        f"{res['end_to_end_ms']['p50']:.1f} ms"
                    )
                for target, files in mask_files.items():
                    agreement += _agreements(files, {**common, "target_masks": target})

        recommendation = recommend(rows, plan.target_fps)
        sustained = None
        if plan.sustained_s > 0 and recommendation is not None:
            rec = recommendation
            image_name = next(iter(plan.images))
            path = str(Path(tmp) / f"{image_name}.png")
            conf = confs_used[(rec["bundle"], image_name, rec["precision"], rec["target_masks"])]
            args = _edge_args(plan, rec["bundle"], rec["precision"], path, conf, rec["threads"])
            sustained = spawn_worker(
                "edge.bench.worker",
                [*args, "--duration", str(plan.sustained_s), "--sample", "5"],
                rec["threads"],
                timeout=plan.sustained_s * 3 + 600,
            )
            sustained.update(
                bundle=rec["bundle"], precision=rec["precision"], threads=rec["threads"],
                image=image_name,
            )  # fmt: skip
            report_line(
                f"sustained {plan.sustained_s:g} s: p50 {sustained['end_to_end_ms']['p50']:.1f}"
                f" ms, p99 {sustained['end_to_end_ms']['p99']:.1f} ms"
            )
    if bar is not None:
        bar.close()
    report = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_facts(),
        "board": {"before": state_before, "after": board_state()},
        "bundles": [
            {
                "dir": b,
                "name": m.name,
                "input": [m.input.imgsz[1], m.input.imgsz[0]],
                "dynamic": m.input.dynamic,
                "precisions": m.precisions,
                "source": m.source,
                # what the text mode's prompt goes through (Segmenter's default, "auto")
                "text_prefilter": None
                if m.clip is None
                else ("dense" if m.clip.dense is not None else "score"),
            }
            for b, m in manifests.items()
        ],
        "settings": {
            "threads": plan.threads,
            "runs": plan.runs,
            "warmup": plan.warmup,
            "mask_targets": plan.mask_targets,
            "modes": plan.modes,
            "text": plan.text,
            "statistics": "p50/p90/p99 over the timed runs of one process per configuration",
        },
        "peak": peak,
        "ops": ops,
        "rows": rows,
        "agreement": agreement,
        "recommendation": recommendation,
        "sustained": sustained,
        "notes": notes,
    }
    from edge.bench.report import report_warnings

    report["warnings"] = report_warnings(report)
    for warning in report["warnings"]:
        print(f"bench: warning: {warning}", file=sys.stderr, flush=True)
    return report


def _load_average() -> float | None:
    """1-minute load average right now (``None`` where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _modes_for(manifest: Any, modes: list[str]) -> list[str]:
    """The prompt modes a bundle supports here (``text`` needs its CLIP section and the
    ``text`` extra's tokenizer packages)."""
    from edge.tokenizer import missing_text_deps

    text_ok = manifest.has_text and not missing_text_deps()
    return [m for m in modes if m != "text" or text_ok]


def _mode_notes(manifests: dict[str, Any], modes: list[str]) -> list[str]:
    """Why a requested prompt mode is skipped for some bundle (shown in the report)."""
    from edge.bundle import NO_CLIP_HINT
    from edge.tokenizer import missing_text_deps

    if "text" not in modes:
        return []
    notes = []
    missing = missing_text_deps()
    if missing:
        notes.append(
            f"text mode skipped: the text extra is not installed (missing {', '.join(missing)};"
            ' pip install "fastsam-edge[text]")'
        )
    for bundle, m in manifests.items():
        if not m.has_text:
            notes.append(f"text mode skipped for {bundle}: {NO_CLIP_HINT}")
    return notes


def _count_ops(
    bundle: str, manifest: Any, input_hw: tuple[int, int], threads: int
) -> dict[str, Any]:
    """Operation count of the detector at this input size (profiled fp32, else the manifest)."""
    from edge.opcount import profile_model

    shape = (1, 3, input_hw[0], input_hw[1])
    if "fp32" in manifest.precisions:
        prof = profile_model(Path(bundle) / manifest.detector_file("fp32"), shape, threads, runs=1)
        return {"gop": prof["gop"], "method": "onnxruntime profile of the fp32 graph",
                "ops_by_type": prof["ops_by_type"]}  # fmt: skip
    gop = manifest.detector_gop
    return {"gop": gop, "method": "bundle manifest" if gop else "unknown (no fp32 file)"}


def _agreements(files: dict[str, str], where: dict[str, Any]) -> list[dict[str, Any]]:
    """Mask agreement of each edge precision with each reference side.

    Args:
        files: ``fp32`` / ``int8`` / reference side name -> masks written by a worker.
        where: Fields copied into every row (bundle, image, target).
    """
    from edge.bench.worker import load_crops
    from edge.metrics import mask_agreement

    out = []
    crops = {k: load_crops(v) for k, v in files.items() if Path(v).is_file()}
    for edge_side in ("fp32", "int8"):
        for ref in REFERENCE_SIDES:
            if edge_side in crops and ref in crops:
                a = mask_agreement(crops[edge_side], crops[ref])
                out.append(
                    {
                        **where,
                        "edge": edge_side,
                        "reference": ref,
                        "edge_masks": int(a["n_a"]),
                        "reference_masks": int(a["n_b"]),
                        "mean_iou_edge_to_ref": a["a_to_b"],
                        "mean_iou_ref_to_edge": a["b_to_a"],
                    }  # fmt: skip
                )
    return out


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm  # a base dependency

    return tqdm(total=total, desc="bench", unit="cfg", file=sys.stderr)
