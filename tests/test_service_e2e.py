"""End to end: the service on replay/demo sources with the demo bundle and each trigger kind,
results checked on disk; source failures; the watchdog; SIGTERM; the CLI.

Fake clocks and event waits throughout (no sleeps); the SIGTERM case runs a real process and
waits on its log output.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import (
    FakeSegmenter,
    FlakySource,
    ListSource,
    NotifySocket,
    assert_only_complete,
)

from edge.service.clock import FakeClock
from edge.service.config import demo_config
from edge.service.notify import Notifier
from edge.service.runner import Service
from edge.service.sources import DemoSource

REPO = Path(__file__).resolve().parents[1]
WAIT = 60.0  # generous upper bound for event waits on a loaded CI machine


@pytest.fixture(scope="module")
def segmenter(demo_bundle):
    from edge.segmenter import Segmenter

    return Segmenter.load(demo_bundle, threads=1)


def _cfg(out: Path, **changes):
    base = {
        "source.width": 160,
        "source.height": 120,
        "source.count": 4,
        "processing.max_masks": 20,
        "model.warmup": False,
    }
    base.update(changes)
    return demo_config(out, **base)


def _results(out: Path) -> list[dict]:
    docs = []
    for d in sorted(p for p in out.iterdir() if not p.name.startswith(".")):
        docs.append(json.loads((d / "result.json").read_text()))
    return docs


def _run_in_thread(service: Service) -> threading.Thread:
    t = threading.Thread(target=service.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert service.ready.wait(WAIT), "service did not become ready"
    return t


def test_interval_trigger_demo_bundle_results_on_disk(tmp_path, segmenter):
    out = tmp_path / "out"
    cfg = _cfg(out, **{"trigger.interval.seconds": 0.0, "output.frame": True})
    svc = Service(cfg, segmenter=segmenter, clock=FakeClock(), max_frames=4)
    summary = svc.run(install_signals=False)
    assert (summary.frames, summary.triggers, summary.written) == (4, 4, 4)
    assert summary.dropped == 0 and summary.errors == 0 and summary.reason == "max frames (4)"
    assert "4 frames, 4 triggers, 4 results written, 0 dropped, 0 errors" in summary.line()
    # per-stage means: every stage measured once per frame, in the summary and /metrics
    for stage in ("read", "queue_wait", "segment", "output"):
        assert svc.metrics.histogram(f"fastsam_{stage}_seconds")[0] == 4, stage
        assert f"fastsam_{stage}_seconds_count 4" in svc.metrics.render()
    assert summary.mean_read_ms > 0 and summary.mean_segment_ms > 0
    assert summary.mean_output_ms > 0 and summary.mean_queue_wait_ms >= 0
    assert summary.mean_segment_ms == pytest.approx(svc.metrics.mean_ms("fastsam_segment_seconds"))
    line = summary.line()
    for part in ("read", "queue", "segment", "output"):
        assert re.search(rf"{part} \d+\.\d", line), (part, line)
    docs = _results(out)
    assert [d["frame_id"] for d in docs] == [1, 2, 3, 4]
    for d in docs:
        # the `fastsam-edge segment` schema, plus the service's fields
        assert d["schema_version"] == 1 and d["trigger"] == "interval"
        assert d["image"] == {"width": 160, "height": 120, "source": d["image"]["source"]}
        assert d["bundle"]["name"] and len(d["bundle"]["sha256"]) == 64
        assert d["num_masks"] == len(d["masks"]) <= 20
        assert d["capture"] == {
            "width": 160,
            "height": 120,
            "roi_xywh": [0, 0, 160, 120],
            "scale": 1.0,
        }
        assert d["files"] == {
            "json": "result.json",
            "overlay": "overlay.jpg",
            "frame": "frame.jpg",
        }
    assert_only_complete(out)


def test_interval_seconds_on_a_fake_clock(tmp_path):
    clock = FakeClock()
    cfg = _cfg(
        tmp_path,
        **{
            "trigger.interval.seconds": 10.0,
            "source.realtime": True,
            "source.loop": True,
            # fake time jumps 10 s per 1 ms of real time: room for every tick, so that a
            # slow disk under the worker cannot turn a tick into a "busy" drop
            "trigger.queue_size": 4,
        },
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), clock=clock, duration_s=35.0)
    s = svc.run(install_signals=False)
    # ticks at 0, 10, 20, 30 s of fake time; frames are read only when a trigger needs one
    assert (s.frames, s.triggers, s.written) == (4, 4, 4)


def _appearing_object_sequence(folder: Path, n: int = 20, appear: int = 10) -> None:
    rng = np.random.default_rng(7)
    background = rng.integers(60, 140, (120, 160, 3), dtype=np.uint8)
    for i in range(n):
        frame = np.clip(
            background.astype(np.int16) + rng.integers(-5, 6, background.shape), 0, 255
        ).astype(np.uint8)
        if i >= appear:
            cv2.circle(frame, (80, 60), 25, (40, 220, 240), -1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)


def test_motion_trigger_on_an_appearing_object(tmp_path, segmenter):
    frames = tmp_path / "frames"
    frames.mkdir()
    _appearing_object_sequence(frames)
    out = tmp_path / "out"
    cfg = _cfg(
        out,
        **{
            "source.kind": "replay",
            "source.path": str(frames),
            "trigger.interval.enabled": False,
            "trigger.motion.enabled": True,
            "trigger.motion.cooldown_s": 60.0,
        },
    )
    svc = Service(cfg, segmenter=segmenter, clock=FakeClock())
    s = svc.run(install_signals=False)
    assert s.frames == 20 and s.reason == "end of source"
    docs = _results(out)
    assert [(d["frame_id"], d["trigger"]) for d in docs] == [(11, "motion")]  # 1-based ids
    assert_only_complete(out)


def test_gpio_trigger_with_mock_pins(tmp_path, segmenter):
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    got = threading.Event()
    cfg = _cfg(
        tmp_path,
        **{
            "trigger.interval.enabled": False,
            "trigger.gpio.enabled": True,
            "trigger.gpio.pin": 27,
            "source.realtime": True,
            "source.loop": True,
        },
    )
    svc = Service(
        cfg,
        segmenter=segmenter,
        clock=FakeClock(),
        gpio_pin_factory=factory,
        on_result=lambda doc: got.set(),
    )
    t = _run_in_thread(svc)
    try:
        factory.pin(27).drive_low()  # button pressed: falling edge
        assert got.wait(WAIT)
    finally:
        svc.request_stop("test")
        t.join(WAIT)
        factory.close()
    docs = _results(tmp_path)
    assert len(docs) == 1 and docs[0]["trigger"] == "gpio"
    assert svc.summary.triggers == 1


def test_busy_segmenter_drops_frames_and_counts_them(tmp_path):
    seg = FakeSegmenter(block=True)
    cfg = _cfg(
        tmp_path, **{"trigger.interval.seconds": 0.0, "source.realtime": True, "source.loop": True}
    )
    clock = FakeClock()
    svc = Service(cfg, segmenter=seg, clock=clock)
    t = _run_in_thread(svc)
    try:
        assert seg.entered.wait(WAIT)
        # the worker holds one frame, the queue (size 1) another: the rest are dropped
        drops = threading.Event()
        while not drops.wait(0.005):
            if svc.metrics.get("fastsam_dropped_total", reason="busy") >= 5:
                drops.set()
        assert len(svc.queue) == 1
    finally:
        seg.gate.set()
        svc.request_stop("test")
        t.join(WAIT)
    s = svc.summary
    assert s.dropped >= 5 and s.frames == s.triggers
    assert s.frames == s.results + s.dropped  # every frame is either segmented or counted


def test_a_source_that_fails_is_reopened_with_backoff(tmp_path, segmenter):
    clock = FakeClock()
    flaky = FlakySource(
        DemoSource(1_000_000, 6, 160, 120), open_failures=3, read_failures=(3,), clock=clock
    )
    cfg = _cfg(tmp_path, **{"trigger.interval.seconds": 0.0, "source.reopen_backoff_s": 2.0})
    svc = Service(cfg, segmenter=segmenter, source=flaky, clock=clock)
    s = svc.run(install_signals=False)
    # 3 failed opens + 1 failed read, then recovery; the demo source restarts at its first
    # scene after the reopen, and the run ends when the source does
    assert svc.metrics.get("fastsam_errors_total", kind="source") == 4
    gaps = [round(b - a, 3) for a, b in zip(flaky.open_times, flaky.open_times[1:], strict=False)]
    assert gaps[:3] == [2.0, 4.0, 8.0]  # exponential backoff between the failing opens
    assert s.written == s.frames == 8 and s.reason == "end of source"
    assert_only_complete(tmp_path)


def test_blocked_segment_call_stops_the_watchdog_pings(tmp_path):
    sock = NotifySocket(tmp_path)
    seg = FakeSegmenter(block=True)
    clock = FakeClock()
    cfg = _cfg(
        tmp_path / "out",
        **{
            "trigger.interval.seconds": 1.0,
            "source.realtime": True,
            "source.loop": True,
            "service.stall_timeout_s": 30.0,
        },
    )
    svc = Service(cfg, segmenter=seg, clock=clock, notifier=Notifier(sock.env(8_000_000)))
    t = _run_in_thread(svc)
    try:
        assert sock.count("READY=1") == 1
        assert seg.entered.wait(WAIT)
        start = clock.now()
        waiter = threading.Event()
        # the frame loop keeps running on the fake clock; wait until the stall is detected
        while not waiter.wait(0.002):
            sock.drain()  # keep the datagram queue short
            if svc.worker_stalled(clock.now()) is not None:
                waiter.set()
        pings_at_stall = sock.count("WATCHDOG=1")
        assert pings_at_stall >= 2, "pings while the segment call was young"
        stalled_at = clock.now()
        while clock.now() < stalled_at + 100.0:  # 100 s of fake time, frames still flowing
            waiter.clear()
            waiter.wait(0.002)
            sock.drain()
        assert sock.count("WATCHDOG=1") <= pings_at_stall + 1, "pings went on while hung"
        assert svc.health()[0] == 503 and "stalled" in svc.health()[1]["problems"][0]
        assert clock.now() - start > 100
        seg.gate.set()  # the model call returns: progress and pings resume
        resumed = threading.Event()
        while not resumed.wait(0.002):
            if sock.count("WATCHDOG=1") > pings_at_stall + 1:
                resumed.set()
    finally:
        seg.gate.set()
        svc.request_stop("test")
        t.join(WAIT)
        sock.drain()
        sock.close()
    assert any(m.startswith("STOPPING=1") for m in sock.messages)


def test_cli_serve_demo_bounded_run(tmp_path):
    from edge.cli import main

    out = tmp_path / "demo"
    rc = main(
        [
            "serve",
            "--demo",
            "--max-frames",
            "2",
            "--out",
            str(out),
            "--set",
            "source.width=160",
            "--set",
            "source.height=120",
            "--set",
            "model.warmup=false",
            "--set",
            "processing.max_masks=10",
        ]
    )
    assert rc == 0
    assert len(_results(out)) == 2
    assert_only_complete(out)


def test_cli_serve_bad_config_is_a_clear_error(tmp_path, capsys):
    from edge.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text("[trigger.motion]\nthreshhold = 3\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "trigger.motion.threshhold: unknown key" in err and "threshold" in err
    assert main(["serve", "--demo", "--set", "source.fps=0", "--out", str(tmp_path)]) == 2
    assert "source.fps" in capsys.readouterr().err


def test_sigterm_mid_run_finishes_the_frame_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "edge.cli",
        "--debug",
        "serve",
        "--demo",
        "--out",
        str(out),
        "--set",
        "source.loop=true",
        "--set",
        "source.width=320",
        "--set",
        "source.height=240",
        "--set",
        "processing.max_masks=30",
        "--set",
        "model.warmup=false",
        "--set",
        "output.frame=true",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        written = 0
        for line in proc.stderr:  # blocking reads of the log: no sleeps, no polling
            if " -> " in line and "masks in" in line:
                written += 1
                if written == 2:  # the worker is now on the next frame: stop mid-frame
                    proc.send_signal(signal.SIGTERM)
                    break
        rest_out, rest_err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest_err
    assert "SIGTERM: finishing the current frame" in rest_err
    assert "fastsam-edge serve:" in rest_out and "[SIGTERM]" in rest_out
    assert_only_complete(out)
    assert len(_results(out)) >= 2


def test_results_of_a_small_run_are_loadable_by_pycocotools(tmp_path, segmenter):
    from pycocotools import mask as mask_utils

    cfg = _cfg(tmp_path, **{"trigger.interval.seconds": 0.0})
    Service(cfg, segmenter=segmenter, clock=FakeClock(), max_frames=1).run(install_signals=False)
    (doc,) = _results(tmp_path)
    for m in doc["masks"]:
        rle = {"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()}
        assert int(mask_utils.area(rle)) == m["area"]


def test_list_source_with_roi_and_cap(tmp_path):
    img = np.zeros((600, 800, 3), np.uint8)
    cfg = _cfg(
        tmp_path,
        **{
            "processing.roi": [100, 100, 600, 400],
            "processing.max_mask_side": 300,
            "trigger.interval.seconds": 0.0,
        },
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), source=ListSource([img]), clock=FakeClock())
    svc.run(install_signals=False)
    (doc,) = _results(tmp_path)
    assert (doc["image"]["width"], doc["image"]["height"]) == (300, 200)
    assert doc["capture"] == {
        "width": 800,
        "height": 600,
        "roi_xywh": [100, 100, 600, 400],
        "scale": 0.5,
    }


def test_aspect_ratio_padding_warning(tmp_path, segmenter, caplog):
    wide = np.zeros((180, 320, 3), np.uint8)  # 16:9 on the demo bundle's square input
    cfg = _cfg(tmp_path, **{"trigger.interval.seconds": 0.0})
    svc = Service(cfg, segmenter=segmenter, source=ListSource([wide]), clock=FakeClock())
    with caplog.at_level("WARNING", logger="edge.service"):
        svc.run(install_signals=False)
    assert any(
        "letterbox padding" in r.getMessage() and "56 %" in r.getMessage() for r in caplog.records
    ), caplog.text
