"""edge.service.events and tracking in the service: track ids in results, enter / leave events
on MQTT and the page, ``output.save = "events"``.

A red-square "detector" on a list source: deterministic frames, no model, no sleeps.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeMqttClient, ListSource

from edge.service.clock import FakeClock
from edge.service.config import ConfigError, demo_config
from edge.service.events import EventLog, box_thumbnail, event_doc
from edge.service.mqtt import discovery_messages
from edge.service.runner import Service
from edge.track import TrackEvent
from edge.types import MaskCrop, Masks

H, W = 96, 128


class RedSquares:
    """Segments the red pixels of a frame: one mask per red square (split by column)."""

    def segment(self, image: np.ndarray, **_kw: Any) -> Masks:
        red = (image[..., 2] > 200) & (image[..., 0] < 80)
        crops, boxes = [], []
        cols = np.flatnonzero(red.any(axis=0))
        if cols.size:  # runs of columns: one object each
            splits = np.flatnonzero(np.diff(cols) > 1) + 1
            for run in np.split(cols, splits):
                part = np.zeros_like(red)
                part[:, run[0] : run[-1] + 1] = red[:, run[0] : run[-1] + 1]
                c = MaskCrop.from_dense(part)
                crops.append(c)
                boxes.append([c.x0, c.y0, c.x0 + c.shape[1], c.y0 + c.shape[0]])
        n = len(crops)
        return Masks(
            np.array(boxes, np.float32).reshape(n, 4),
            np.full(n, 0.9, np.float32),
            tuple(crops),
            image.shape[:2],
            timings={"preprocess": 0.0, "infer": 0.0, "postprocess": 0.0},
        )


def _frames(present: list[bool]) -> list[np.ndarray]:
    out = []
    for k, on in enumerate(present):
        img = np.full((H, W, 3), 60, np.uint8)
        if on:
            img[30:60, 10 + 4 * k : 40 + 4 * k] = (30, 30, 230)
        out.append(img)
    return out


def _service(
    tmp_path: Path, present: list[bool], before_stop: Any = None, **changes: Any
) -> tuple[Service, list]:
    base = {
        "source.width": W,
        "source.height": H,
        "model.warmup": False,
        "processing.track": True,
        "events.min_frames": 2,
        "events.max_missed": 2,
        "mqtt.enabled": True,
        "mqtt.topic_prefix": "p",
    }
    base.update(changes)
    cfg = demo_config(tmp_path / "out", **base)
    docs: list[dict[str, Any]] = []
    clients: list[FakeMqttClient] = []

    def factory(cid: str) -> FakeMqttClient:
        c = FakeMqttClient(cid)
        clients.append(c)
        return c

    svc = Service(
        cfg,
        segmenter=RedSquares(),
        source=ListSource(_frames(present)),
        clock=FakeClock(),
        mqtt_client_factory=factory,
        on_result=docs.append,
    )
    svc.start()
    clients[0].connect()
    svc._loop()
    try:
        if before_stop is not None:
            before_stop(svc)
    finally:
        svc.shutdown()
    return svc, [docs, clients[0]]


def test_track_ids_and_events_through_the_service(tmp_path):
    present = [True] * 5 + [False] * 5
    svc, (docs, client) = _service(tmp_path, present)
    ids = [[m["track_id"] for m in d["masks"]] for d in docs]
    assert ids[:5] == [[-1], [1], [1], [1], [1]] and ids[5:] == [[]] * 5
    events = [d["events"] for d in docs]
    assert [e["type"] for ev in events for e in ev] == ["enter", "leave"]
    enter = events[1][0]
    assert enter["track_id"] == 1 and enter["frame_id"] == docs[1]["frame_id"]
    assert enter["event_type"] == "enter" and enter["box"] == [14.0, 30.0, 44.0, 60.0]
    assert "label" not in enter  # class-agnostic masks
    assert Path(enter["result_dir"]).is_dir()  # output.save = "all": every frame written
    leave = next(e for ev in events for e in ev if e["type"] == "leave")
    assert leave["frame_id"] == docs[7]["frame_id"]  # unseen on frames 6, 7: gone after 2
    published = [json.loads(p[1]) for p in client.published if p[0] == "p/events"]
    assert [(e["type"], e["track_id"]) for e in published] == [("enter", 1), ("leave", 1)]
    assert published[0]["result_dir"] == enter["result_dir"]
    recent = svc.recent_events()
    assert [e["type"] for e in recent] == ["leave", "enter"] and all(e["thumb"] for e in recent)
    jpeg = svc.event_thumbnail(recent[0]["seq"])
    assert jpeg is not None and jpeg[:3] == b"\xff\xd8\xff"
    assert svc.page_facts()["tracking"] is True
    assert svc.metrics.get("fastsam_track_events_total", type="enter") == 1


def test_save_events_writes_only_frames_with_an_event(tmp_path):
    present = [True] * 5 + [False] * 5
    svc, (docs, _client) = _service(tmp_path, present, **{"output.save": "events"})
    written = sorted(p for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    frame_ids = [json.loads((d / "result.json").read_text())["frame_id"] for d in written]
    with_events = [d["frame_id"] for d in docs if d["events"]]
    assert frame_ids == with_events and len(frame_ids) == 2
    assert svc.metrics.get("fastsam_results_skipped_total", reason="no_event") == 8


def test_without_tracking_no_track_ids_and_no_events(tmp_path):
    _svc, (docs, client) = _service(tmp_path, [True] * 4, **{"processing.track": False})
    assert all("track_id" not in m for d in docs for m in d["masks"])
    assert all("events" not in d for d in docs)
    assert not [p for p in client.published if p[0] == "p/events"]


def test_save_events_needs_tracking():
    with pytest.raises(ConfigError, match=r"output\.save"):
        demo_config("/tmp/x", **{"output.save": "events"})


def test_discovery_announces_the_event_entity_only_with_events():
    from edge.service.config import MqttConfig

    cfg = MqttConfig(enabled=True, topic_prefix="p", discovery=True, client_id="pi")
    with_events = discovery_messages(cfg, "p", "1", events=True)
    entity = with_events["homeassistant/event/pi/object/config"]
    assert entity["state_topic"] == "p/events" and entity["event_types"] == ["enter", "leave"]
    assert entity["default_entity_id"] == "event.pi_object"
    assert not any("/event/" in t for t in discovery_messages(cfg, "p", "1"))


@pytest.mark.parametrize(
    ("class_id", "names", "label"),
    [(-1, (), None), (1, ("cat", "dog"), "dog"), (5, ("cat",), None)],
)
def test_event_doc(class_id, names, label):
    ev = TrackEvent("enter", 3, 9, (1.0, 2.0, 3.0, 4.0), class_id)
    doc = event_doc(ev, 42, 0.0, names)
    assert doc["type"] == doc["event_type"] == "enter" and doc["frame_id"] == 42
    assert doc["time"] == "1970-01-01T00:00:00.000+00:00" and doc["box"] == [1.0, 2.0, 3.0, 4.0]
    assert doc.get("label") == label


def test_event_log_keeps_the_newest_and_their_thumbnails():
    log = EventLog(2)
    for k in range(3):
        log.add({"type": "enter", "track_id": k}, b"jpeg%d" % k)
    recent = log.recent()
    assert [e["track_id"] for e in recent] == [2, 1]
    assert log.thumbnail(recent[0]["seq"]) == b"jpeg2" and log.thumbnail(1) is None
    assert log.nbytes == 10


@pytest.mark.parametrize(
    ("box", "ok"), [((10, 10, 40, 30), True), ((500, 500, 600, 600), False), ((0, 0, 1, 1), True)]
)
def test_box_thumbnail(box, ok):
    image = np.zeros((H, W, 3), np.uint8)
    data = box_thumbnail(image, box)
    assert (data is not None) == ok
    if ok:
        assert data[:3] == b"\xff\xd8\xff"


def test_the_page_gets_events_and_their_thumbnails_over_http(tmp_path):
    import http.client

    seen: dict[str, Any] = {}

    def get(svc: Service, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", svc.http.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def check(svc: Service) -> None:
        wait = threading.Event()
        for _ in range(3000):  # the output stage may still be on the last frames
            if len(svc.recent_events()) == 2:
                break
            wait.wait(0.01)
        status, body = get(svc, "/state")
        assert status == 200
        state = json.loads(body)
        seen["state"] = state
        seq = state["events"][0]["seq"]
        seen["thumb"] = get(svc, f"/events/thumb?seq={seq}")
        seen["bad"] = get(svc, "/events/thumb?seq=abc")[0]
        seen["gone"] = get(svc, "/events/thumb?seq=999")[0]

    present = [True] * 5 + [False] * 5
    _service(tmp_path, present, check, **{"http.enabled": True, "http.port": 0})
    state = seen["state"]
    assert state["tracking"] is True
    assert [e["type"] for e in state["events"]] == ["leave", "enter"]
    status, jpeg = seen["thumb"]
    assert status == 200 and jpeg[:3] == b"\xff\xd8\xff"
    assert seen["bad"] == 400 and seen["gone"] == 404
