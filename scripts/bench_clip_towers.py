#!/usr/bin/env python3
"""CLIP image towers for text prompts, side by side: ms per crop, peak RSS, text / everything.

Steps (each reuses what an earlier run left in ``--work``):

1. ``export`` (export env): each tower of ``--towers`` with **random weights** (timing only)
   through ``export.clip.export_clip`` into ``WORK/clip/<tower>/`` (fp32 + int8, verified).
2. ``crops``: per tower x precision x threads x batch, a fresh process loads the image encoder
   alone, runs the batch (warm-up + ``--runs``) and reports the median ms per crop and its peak
   RSS (``VmHWM``; python + numpy + onnxruntime included). Loops run tower-innermost so the
   towers of one configuration are measured next to each other.
3. ``text``: each tower grafted onto the detector bundle ``--detector`` (e.g. FastSAM-s 640
   int8), then ``fastsam-edge bench --text-cost``'s timing (``edge.bench.text``: everything
   mode vs a new word each call vs a second word on the same frame, one 640x480 scene with
   ~``--masks`` masks, interleaved), detector and CLIP int8.
4. ``rss``: peak RSS of ``fastsam-edge segment IMAGE --text ...`` per grafted bundle, detector
   and CLIP int8 (a fresh process each; ``ru_maxrss`` of the child).

Writes ``OUT/clip-towers.json`` and prints Markdown tables. Absolute times on a shared machine
are noisy; compare rows measured in the same run.

Example (export env for step 1, any env with the runtime for 2-4)::

    python scripts/bench_clip_towers.py --work work/towers --detector work/s640-int8 \\
        --out docs/bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TOWERS = "ViT-B-32-quickgelu,MobileCLIP2-S0,MobileCLIP-S1,MobileCLIP-S2"
STEPS = ("export", "crops", "text", "rss")


def export_towers(work: Path, towers: list[str]) -> None:
    """Step 1: random-weight CLIP exports (skips towers already exported)."""
    from export.clip import export_clip

    for tower in towers:
        dest = work / "clip" / tower
        if (dest / "clip-section.json").is_file():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{tower}-", dir=work))
        t0 = time.perf_counter()
        section = export_clip(tower, None, tmp, progress=False, threads=2)
        (tmp / "clip-section.json").write_text(json.dumps(section.to_json(), indent=1))
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        print(f"exported {tower} in {time.perf_counter() - t0:.0f} s", flush=True)


_CHILD = r"""
import json, sys, time
import numpy as np
from edge.session import create_session
path = sys.argv[1]
batch, threads, runs, size = (int(v) for v in sys.argv[2:6])
sess = create_session(path, threads=threads)
x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
sess.run(None, {"pixels": x})
ts = []
for _ in range(runs):
    t0 = time.perf_counter()
    sess.run(None, {"pixels": x})
    ts.append((time.perf_counter() - t0) * 1e3 / batch)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"ms_per_crop": float(np.median(ts)), "peak_rss_mib": hwm / 1024}))
"""


def crops(
    work: Path, towers: list[str], batches: list[int], threads: list[int], runs: int
) -> list[dict[str, Any]]:
    """Step 2: ms per crop and peak RSS of the image encoder alone, fresh process per row."""
    rows = []
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for prec in ("int8", "fp32"):
        for th in threads:
            for b in batches:
                for tower in towers:
                    sec = json.loads((work / "clip" / tower / "clip-section.json").read_text())
                    path = work / "clip" / tower / sec["files"]["image"][prec]
                    n = max(1, runs if b > 1 else runs * 3)
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, str(path), str(b), str(th), str(n)]
                        + [str(sec["image"]["size"])],
                        capture_output=True,
                        text=True,
                        env=env,
                        check=True,
                    )
                    row = {"tower": tower, "precision": prec, "threads": th, "batch": b}
                    row.update(json.loads(out.stdout.strip().splitlines()[-1]))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def graft(detector: Path, clip_dir: Path, dest: Path) -> Path:
    """A bundle = ``detector``'s files (hard links) + one exported CLIP, manifest rewritten."""
    from edge.bundle import sha256_file

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    manifest = json.loads((detector / "bundle.json").read_text())
    section = json.loads((clip_dir / "clip-section.json").read_text())
    for p in detector.iterdir():
        if p.name != "bundle.json":
            os.link(p, dest / p.name)
    names = {section["tokenizer"]["bpe"]}
    for tower in section["files"].values():
        names.update(tower.values())
    names.update((section.get("dense") or {}).get("files", {}).values())  # conv towers
    for name in sorted(names):
        os.link(clip_dir / name, dest / name)
        manifest["files"][name] = {
            "sha256": sha256_file(dest / name),
            "bytes": (dest / name).stat().st_size,
            "role": "asset",
        }
    manifest["clip"] = section
    manifest.pop("memory", None)  # measured for the detector alone
    (dest / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return dest


def text_ratios(
    work: Path, detector: Path, towers: list[str], masks: int, runs: int, threads: int
) -> list[dict[str, Any]]:
    """Step 3: ``fastsam-edge bench --text-cost``'s timing per grafted tower (detector and CLIP
    int8): everything vs a new word each call vs a second word on the same frame."""
    import cv2

    from edge.bench.run import choose_confs
    from edge.bench.text import measure_text_cost
    from edge.demo.scenes import generate_scene

    image = generate_scene(1_700_000, 640, 480).image
    frame = work / "scene-640x480.png"
    cv2.imwrite(str(frame), image)
    rows = []
    for tower in towers:
        bundle = graft(detector, work / "clip" / tower, work / "bundles" / tower)
        conf = choose_confs(str(bundle), image, [masks], threads, "int8")[masks]
        t = measure_text_cost(str(bundle), str(frame), conf, "int8", threads, runs)
        row = {"tower": tower, **t}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _peak_rss_mib(cmd: list[str]) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, proc.returncode


def segment_rss(
    work: Path, detector: Path, towers: list[str], threads: int, text: str = "a red circle"
) -> list[dict[str, Any]]:
    """Step 4: peak RSS of ``fastsam-edge segment --text`` (detector int8 + CLIP), on freshly
    grafted bundles (the exports as they are now)."""
    import cv2

    from edge.demo.scenes import generate_scene

    image = work / "scene-640x480.png"
    cv2.imwrite(str(image), generate_scene(1_700_000, 640, 480).image)
    rows = []
    for tower in towers:
        bundle = graft(detector, work / "clip" / tower, work / "bundles" / tower)
        base = [sys.executable, "-m", "edge.cli", "segment", str(image), "--bundle", str(bundle)]
        base += ["--precision", "int8", "--threads", str(threads), "--no-progress"]
        row: dict[str, Any] = {"tower": tower, "threads": threads}
        for key, extra in (
            ("everything_mib", []),
            ("text_int8_mib", ["--text", text, "--clip-precision", "int8"]),
            (  # conv towers: the default above is the dense prefilter, this the score one
                "text_int8_score_mib",
                ["--text", text, "--clip-precision", "int8", "--text-prefilter", "score"],
            ),
            ("text_fp32_mib", ["--text", text, "--clip-precision", "fp32"]),
        ):
            mib, rc = _peak_rss_mib(base + extra)
            if rc != 0:
                raise RuntimeError(f"{tower} {key}: segment exited {rc}")
            row[key] = round(mib, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--work", required=True, help="exports and grafted bundles (reused)")
    p.add_argument("--detector", help="detector bundle for steps text and rss (int8 inside)")
    p.add_argument("--towers", default=TOWERS)
    p.add_argument("--steps", default=",".join(STEPS))
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=2, help="timed runs per row (batch 1: 3x)")
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--text-runs", type=int, default=3)
    p.add_argument("--out", default="clip-towers")
    a = p.parse_args(argv)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    towers = a.towers.split(",")
    steps = a.steps.split(",")
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"--steps: unknown {unknown}; choose from {list(STEPS)}")
    if {"text", "rss"} & set(steps) and not a.detector:
        p.error("--steps text/rss need --detector BUNDLE")
    out = Path(a.out) / "clip-towers.json"
    report: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    report["towers"] = towers
    if "export" in steps:
        export_towers(work, towers)
    if "crops" in steps:
        rows = crops(
            work,
            towers,
            [int(v) for v in a.batches.split(",")],
            [int(v) for v in a.threads.split(",")],
            a.runs,
        )
        report["crops"] = rows
    if "text" in steps:
        report["text"] = text_ratios(work, Path(a.detector), towers, a.masks, a.text_runs, 2)
    if "rss" in steps:
        report["rss"] = segment_rss(work, Path(a.detector), towers, 2)
    from edge.io import atomic_write_json

    atomic_write_json(out, report)
    print_tables(report)
    return 0


def print_tables(report: dict[str, Any]) -> None:
    """Markdown tables of whatever the report holds."""
    towers = report.get("towers", [])
    if report.get("crops"):
        idx = {(r["tower"], r["precision"], r["threads"], r["batch"]): r for r in report["crops"]}
        batches = sorted({r["batch"] for r in report["crops"]})
        threads = sorted({r["threads"] for r in report["crops"]})
        head = ["tower", "precision"]
        head += [f"b{b} {t}T ms" for t in threads for b in batches]
        head += [f"peak RSS b{b}" for b in batches]
        print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
        for tower in towers:
            for prec in ("int8", "fp32"):
                if (tower, prec, threads[-1], batches[0]) not in idx:
                    continue
                cells = [tower, prec]
                cells += [
                    f"{idx[(tower, prec, t, b)]['ms_per_crop']:.1f}"
                    for t in threads
                    for b in batches
                ]
                cells += [
                    f"{idx[(tower, prec, threads[-1], b)]['peak_rss_mib']:.0f} MiB"
                    for b in batches
                ]
                print("| " + " | ".join(cells) + " |")
    if report.get("text"):
        print("\n| tower | masks | everything ms | new word ms (x) | second word ms (x) |")
        print("|---|---|---|---|---|")
        for r in report["text"]:
            ms, x = r["ms"], r["x_everything"]
            print(
                f"| {r['tower']} | {r['masks']} | {ms['everything']:.0f} | {ms['text']:.0f} "
                f"({x['text']:.2f}x) | {ms['second_word']:.0f} ({x['second_word']:.2f}x) |"
            )
    if report.get("rss"):
        print("\n| tower | everything | + text (CLIP int8) | + text (CLIP fp32) |")
        print("|---|---|---|---|")
        for r in report["rss"]:
            print(
                f"| {r['tower']} | {r['everything_mib']:.0f} MiB | {r['text_int8_mib']:.0f} MiB "
                f"| {r['text_fp32_mib']:.0f} MiB |"
            )


if __name__ == "__main__":
    sys.exit(main())
