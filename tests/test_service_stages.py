"""The staged service (``service.pipeline = "staged"``): segmentation and output in their own
threads. Order of results and MQTT messages, overlap, drain on stop, per-queue drops, and the
watchdog on a stalled output stage.

Fake segmenter, fake clock and event waits (no sleeps), as in ``test_service_e2e.py``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    FakeMqttClient,
    FakeSegmenter,
    NotifySocket,
    assert_only_complete,
)

from edge.service.clock import FakeClock
from edge.service.config import demo_config
from edge.service.notify import Notifier
from edge.service.queues import OUTPUT_QUEUE_SIZE
from edge.service.runner import Service

WAIT = 60.0  # generous upper bound for event waits on a loaded CI machine


def _cfg(out: Path, pipeline: str = "staged", **changes: Any):
    base = {
        "source.width": 160,
        "source.height": 120,
        "source.count": 8,
        "processing.max_masks": 20,
        "model.warmup": False,
        "trigger.interval.seconds": 0.0,
        "service.pipeline": pipeline,
    }
    base.update(changes)
    return demo_config(out, **base)


def _run_in_thread(service: Service) -> threading.Thread:
    t = threading.Thread(target=service.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert service.ready.wait(WAIT), "service did not become ready"
    return t


def _wait_until(cond: Any, what: str) -> None:
    ev = threading.Event()
    for _ in range(int(WAIT / 0.002)):
        if cond():
            return
        ev.wait(0.002)
    raise AssertionError(f"timed out waiting for {what}")


class GatedResults:
    """``on_result`` that records frame ids and blocks while ``gate`` is cleared."""

    def __init__(self, blocked: bool = False) -> None:
        self.frame_ids: list[int] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not blocked:
            self.gate.set()

    def __call__(self, doc: dict[str, Any]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.frame_ids.append(int(doc["frame_id"]))


def test_pipeline_key_is_checked(tmp_path):
    from edge.service.config import ConfigError

    with pytest.raises(ConfigError, match=r"service\.pipeline.*serial.*staged"):
        _cfg(tmp_path, pipeline="parallel")


@pytest.mark.parametrize("pipeline", ["serial", "staged"])
def test_results_and_mqtt_messages_keep_frame_order(tmp_path, pipeline):
    clients: list[FakeMqttClient] = []

    class Connecting(FakeMqttClient):
        def loop_start(self) -> None:  # the broker answers at once
            super().loop_start()
            self.connect()

    def factory(cid: str) -> FakeMqttClient:
        clients.append(Connecting(cid))
        return clients[-1]

    results = GatedResults()
    cfg = _cfg(tmp_path / "out", pipeline, **{"mqtt.enabled": True, "mqtt.image": False})
    svc = Service(
        cfg,
        segmenter=FakeSegmenter(),
        clock=FakeClock(),
        on_result=results,
        mqtt_client_factory=factory,
    )
    s = svc.run(install_signals=False)
    assert s.reason == "end of source" and s.dropped == 0
    ids = results.frame_ids
    assert ids == list(range(ids[0], ids[0] + 8))  # every frame of the offline source, in order
    messages = [json.loads(p[1]) for p in clients[0].published if p[0].endswith("/results")]
    assert [m["frame_id"] for m in messages] == ids
    written = sorted(p for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert [json.loads((d / "result.json").read_text())["frame_id"] for d in written] == ids
    assert_only_complete(tmp_path / "out")


def test_output_overlaps_the_next_segmentation(tmp_path):
    """Frame 0's output is still running when frame 1 is segmented (serial: impossible)."""
    seg = FakeSegmenter()
    overlapped: list[bool] = []

    def on_result(doc: dict[str, Any]) -> None:
        if not overlapped:  # the first result
            ev = threading.Event()
            for _ in range(int(WAIT / 0.002)):
                if seg.calls >= 2:
                    break
                ev.wait(0.002)
            overlapped.append(seg.calls >= 2)

    cfg = _cfg(tmp_path / "out", **{"source.count": 3})
    s = Service(cfg, segmenter=seg, clock=FakeClock(), on_result=on_result).run(
        install_signals=False
    )
    assert overlapped == [True] and s.results == 3


def test_stop_drains_every_segmented_frame(tmp_path):
    """A stop (what SIGTERM does: drain=False) drops the frames still queued for the segmenter
    but writes every frame already segmented, even while the output stage was blocked."""
    results = GatedResults(blocked=True)
    cfg = _cfg(tmp_path / "out", **{"source.loop": True, "source.realtime": True})
    svc = Service(cfg, segmenter=FakeSegmenter(), clock=FakeClock(), on_result=results)
    t = _run_in_thread(svc)
    try:
        assert results.entered.wait(WAIT)
        # one result in the output stage, the queue full behind it, the worker waiting
        _wait_until(lambda: svc.output._queue.full(), "a full output queue")
        svc.request_stop("SIGTERM", drain=False)
    finally:
        results.gate.set()
        t.join(WAIT)
    assert not t.is_alive()
    s = svc.summary
    assert s.results >= 1 + OUTPUT_QUEUE_SIZE
    assert len(results.frame_ids) == s.results == s.written  # nothing segmented was lost
    assert results.frame_ids == sorted(results.frame_ids)
    assert svc.metrics.get("fastsam_queue_dropped_total", queue="output") == 0
    assert_only_complete(tmp_path / "out")


def test_drops_are_counted_per_queue(tmp_path):
    """Frames queue: a live source outpaces a hung output stage. Output queue: a shutdown
    that the stalled output stage cannot finish drops what waited for it, counted."""
    results = GatedResults(blocked=True)
    cfg = _cfg(
        tmp_path / "out",
        **{"source.loop": True, "source.realtime": True, "service.stall_timeout_s": 1.0},
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), clock=FakeClock(), on_result=results)
    t = _run_in_thread(svc)
    try:
        assert results.entered.wait(WAIT)
        _wait_until(
            lambda: svc.metrics.get("fastsam_queue_dropped_total", queue="frames") >= 3,
            "frame drops",
        )
        svc.request_stop("test", drain=False)
        t.join(WAIT)  # the output never finishes: shutdown gives up after the stall limit
    finally:
        results.gate.set()
    m = svc.metrics
    frames_dropped = m.get("fastsam_queue_dropped_total", queue="frames")
    output_dropped = m.get("fastsam_queue_dropped_total", queue="output")
    # the queued results and the one the worker was waiting to hand over
    assert frames_dropped >= 3 and output_dropped == OUTPUT_QUEUE_SIZE + 1
    assert m.get("fastsam_dropped_total") == frames_dropped + output_dropped
    assert m.get("fastsam_errors_total", kind="output") == 1  # the abandoned output stage
    assert m.get("fastsam_errors_total", kind="segment") == 0  # not a segmentation stall
    s = svc.summary  # every frame is segmented and written, or counted as dropped
    assert s.frames == s.written + s.dropped  # (the stalled one was written, then hung)
    text = svc.metrics_text()
    assert f'fastsam_queue_dropped_total{{queue="output"}} {OUTPUT_QUEUE_SIZE + 1}' in text
    assert "fastsam_output_queue_depth" in text


def test_stalled_output_stage_stops_the_watchdog_pings(tmp_path):
    sock = NotifySocket(tmp_path)
    results = GatedResults(blocked=True)
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
    svc = Service(
        cfg,
        segmenter=FakeSegmenter(),
        clock=clock,
        notifier=Notifier(sock.env(8_000_000)),
        on_result=results,
    )
    t = _run_in_thread(svc)
    try:
        assert results.entered.wait(WAIT)

        def stalled() -> bool:
            sock.drain()
            return svc.stalled_stage(clock.now()) is not None

        _wait_until(stalled, "the stall to be detected")
        assert svc.stalled_stage(clock.now())[0] == "output"
        pings_at_stall = sock.count("WATCHDOG=1")
        stalled_at = clock.now()
        _wait_until(lambda: sock.drain() is not None and clock.now() > stalled_at + 100, "time")
        assert sock.count("WATCHDOG=1") <= pings_at_stall + 1, "pings went on while hung"
        code, body = svc.health()
        assert code == 503 and any(p.startswith("output stalled") for p in body["problems"])
        assert body["output_queue_depth"] is not None
        results.gate.set()  # the output returns: progress and pings resume
        _wait_until(
            lambda: sock.drain() is not None and sock.count("WATCHDOG=1") > pings_at_stall + 1,
            "pings to resume",
        )
    finally:
        results.gate.set()
        svc.request_stop("test")
        t.join(WAIT)
        sock.drain()
        sock.close()


class _Embedded:
    """An embedder's segmenter: ``segment`` only, no bundle, no detect/select."""

    def segment(self, image, conf=None, iou=None, max_det=None, prompt=None):  # noqa: ANN001, ANN201
        return FakeSegmenter().segment(image, prompt=prompt)


def test_segmenter_protocols(demo_bundle):
    from edge.segmenter import Segmenter
    from edge.service.protocols import DetectsAndSelects, HasBundle, bundle_of

    real = Segmenter.load(demo_bundle, threads=1)
    assert isinstance(real, HasBundle) and isinstance(real, DetectsAndSelects)
    assert bundle_of(real) is real.manifest
    fake = FakeSegmenter()
    assert not isinstance(fake, HasBundle) and not isinstance(fake, DetectsAndSelects)
    assert bundle_of(fake) is None and bundle_of(_Embedded()) is None


def test_a_segmenter_without_bundle_runs_the_service(tmp_path):
    results = GatedResults()
    cfg = _cfg(tmp_path / "out", **{"source.count": 3, "model.warmup": True})
    svc = Service(cfg, segmenter=_Embedded(), clock=FakeClock(), on_result=results)
    s = svc.run(install_signals=False)
    assert s.results == 3 and len(results.frame_ids) == 3
    assert svc.latest()["bundle"] == {"name": "_Embedded"}
