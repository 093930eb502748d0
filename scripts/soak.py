#!/usr/bin/env python3
"""Soak test of the service: many frames through the real pipeline, checking that memory and
file handles stay flat.

The service runs in this process on the demo source (or a replay folder) with the demo bundle
(or ``--bundle``), segmenting every frame, writing every result (with retention on, so
deletions are exercised too). RSS and open file descriptors are sampled after a warm-up and at
the end; growth beyond the limits fails the run (exit 1).

    python scripts/soak.py --frames 300                  # the CI soak (tests/test_service_soak.py)
    python scripts/soak.py --duration 3600 --report 60   # an hour, a line a minute
    python scripts/soak.py --duration 86400 --bundle /var/lib/fastsam-edge/models/fastsam-s \\
        --source replay --path /data/frames --width 1280 --height 960   # on the Pi

Prints one JSON object at the end (and with ``--report``, a line per interval).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge.service.clock import Clock
from edge.service.config import demo_config
from edge.service.runner import Service, configure_logging


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    """Open file descriptors of this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def run_soak(
    out_dir: str | Path,
    frames: int | None = 300,
    duration_s: float | None = None,
    warmup_frames: int = 50,
    width: int = 160,
    height: int = 120,
    bundle: str = "demo",
    source: str = "demo",
    path: str = "",
    max_masks: int = 20,
    max_results: int = 50,
    report_s: float = 0.0,
    threads: int = 0,
    segmenter: Any = None,
) -> dict[str, Any]:
    """Run the service for ``frames`` frames (or ``duration_s``) and measure.

    Returns:
        ``frames``, ``written``, ``dropped``, ``errors``, ``rss_warm_mb``, ``rss_end_mb``,
        ``rss_growth_pct``, ``fds_warm``, ``fds_end``, ``elapsed_s``, ``ms_per_frame``.
    """
    changes: dict[str, Any] = {
        "model.bundle": bundle,
        "source.kind": source,
        "source.width": width,
        "source.height": height,
        "source.count": 20,
        "source.loop": True,
        "processing.max_masks": max_masks,
        "output.max_results": max_results,
        "output.min_free_mb": 0.0,
        "model.warmup": True,
        "model.threads": threads,
    }
    if source == "replay":
        changes["source.path"] = path
    cfg = demo_config(out_dir, **changes)
    samples: dict[str, Any] = {}
    lock = threading.Lock()
    count = {"n": 0, "last_report": time.monotonic()}

    def on_result(doc: dict[str, Any]) -> None:
        with lock:
            count["n"] += 1
            n = count["n"]
            if n == warmup_frames:
                samples["rss_warm"] = rss_bytes()
                samples["fds_warm"] = open_fds()
                samples["t_warm"] = time.monotonic()
            if report_s and time.monotonic() - count["last_report"] >= report_s:
                count["last_report"] = time.monotonic()
                print(
                    json.dumps(
                        {"frames": n, "rss_mb": round(rss_bytes() / 2**20, 1), "fds": open_fds()}
                    ),
                    flush=True,
                )

    service = Service(
        cfg,
        segmenter=segmenter,
        clock=Clock(),
        max_frames=frames,
        duration_s=duration_s,
        on_result=on_result,
    )
    t0 = time.monotonic()
    summary = service.run(install_signals=threading.current_thread() is threading.main_thread())
    elapsed = time.monotonic() - t0
    rss_end, fds_end = rss_bytes(), open_fds()
    rss_warm = samples.get("rss_warm", rss_end)
    timed = summary.results - warmup_frames
    return {
        "frames": summary.frames,
        "written": summary.written,
        "dropped": summary.dropped,
        "errors": summary.errors,
        "rss_warm_mb": round(rss_warm / 2**20, 2),
        "rss_end_mb": round(rss_end / 2**20, 2),
        "rss_growth_pct": round((rss_end - rss_warm) / rss_warm * 100, 2),
        "fds_warm": samples.get("fds_warm", fds_end),
        "fds_end": fds_end,
        "elapsed_s": round(elapsed, 2),
        "ms_per_frame": round((time.monotonic() - samples["t_warm"]) / timed * 1e3, 1)
        if timed > 0 and "t_warm" in samples
        else None,
        "mean_segment_ms": round(summary.mean_segment_ms, 1),
        "summary": summary.line(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, help="frames to process (default 300 unless --duration)")
    p.add_argument("--duration", type=float, help="seconds to run instead")
    p.add_argument("--warmup", type=int, default=50, help="frames before the first sample")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--bundle", default="demo")
    p.add_argument("--source", choices=["demo", "replay"], default="demo")
    p.add_argument("--path", default="", help="replay folder or video")
    p.add_argument("--max-masks", type=int, default=20)
    p.add_argument("--max-results", type=int, default=50, help="retention during the soak")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: auto)")
    p.add_argument("--out", help="output dir (default: a temporary one)")
    p.add_argument("--report", type=float, default=0.0, help="print a sample every S seconds")
    p.add_argument("--max-rss-growth", type=float, default=5.0, help="percent (fail above)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    configure_logging("warning", debug=args.debug)
    frames = args.frames if args.frames or args.duration else 300
    with tempfile.TemporaryDirectory(prefix="fastsam-soak-") as tmp:
        res = run_soak(
            args.out or tmp,
            frames=frames,
            duration_s=args.duration,
            warmup_frames=args.warmup,
            width=args.width,
            height=args.height,
            bundle=args.bundle,
            source=args.source,
            path=args.path,
            max_masks=args.max_masks,
            max_results=args.max_results,
            report_s=args.report,
            threads=args.threads,
        )
    ok = res["rss_growth_pct"] <= args.max_rss_growth and res["fds_end"] <= res["fds_warm"]
    ok = ok and res["errors"] == 0 and res["written"] == res["frames"]
    res["ok"] = ok
    print(json.dumps(res, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
