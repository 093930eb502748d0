"""Service building blocks: triggers, queue, sources, transforms, metrics, sd_notify, MQTT."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeMqttClient, FlakySource, ListSource, NotifySocket

from edge.service.clock import FakeClock
from edge.service.config import GpioConfig, MotionConfig, MqttConfig, ServiceConfig
from edge.service.mqtt import (
    MqttPublisher,
    compact_message,
    count_template,
    discovery_messages,
    word_slug,
)
from edge.service.notify import Notifier, WatchdogPinger
from edge.service.queues import Job, JobQueue
from edge.service.sources import (
    DemoSource,
    FrameTransform,
    OpenCVSource,
    PiCameraSource,
    ReplaySource,
    ResilientSource,
    SourceDown,
    SourceError,
    padding_waste,
)
from edge.service.telemetry import Metrics
from edge.service.triggers import GpioTrigger, IntervalTrigger, MotionTrigger

# --------------------------------------------------------------------------------------------
# triggers
# --------------------------------------------------------------------------------------------


def test_interval_trigger_schedule():
    t = IntervalTrigger(10.0)
    assert t.due(0.0)
    t.fired(0.0)
    assert not t.due(5.0) and t.wait_time(5.0) == pytest.approx(5.0)
    assert t.due(10.0)
    t.fired(10.5)  # late by 0.5 s: keeps the grid
    assert t.wait_time(10.5) == pytest.approx(9.5)
    t.fired(100.0)  # a long stall: one tick, then a fresh schedule (no burst)
    assert not t.due(101.0) and t.due(110.0)


def _noise_frame(rng, value=100, h=120, w=160):
    base = np.full((h, w, 3), value, np.int16) + rng.integers(-6, 7, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_motion_uses_int16_no_uint8_wraparound():
    m = MotionTrigger(MotionConfig(enabled=True, threshold=50, min_area=0.5, width=16))
    dark = np.full((16, 16, 3), 10, np.uint8)
    bright = np.full((16, 16, 3), 200, np.uint8)
    assert not m.update(bright, 0.0)  # first frame: background
    # 10 - 200 wraps to 66 in uint8 (still > 50 by luck); use a pair that wraps *below*:
    m2 = MotionTrigger(
        MotionConfig(enabled=True, threshold=50, min_area=0.5, width=16, background_alpha=1.0)
    )
    m2.update(np.full((16, 16, 3), 20, np.uint8), 0.0)
    # uint8: 20 - 250 = 26 (wrapped) -> no motion; int16: |20 - 250| = 230 -> motion
    assert m2.update(np.full((16, 16, 3), 250, np.uint8), 1.0)
    assert m.update(dark, 1.0)


def test_motion_fires_when_an_object_appears_then_cools_down():
    rng = np.random.default_rng(0)
    m = MotionTrigger(MotionConfig(enabled=True, threshold=25, min_area=0.01, cooldown_s=5.0))
    fired = []
    for i in range(40):
        frame = _noise_frame(rng)
        if i >= 10:  # an object appears at frame 10 and stays
            frame[30:70, 40:90] = (230, 230, 230)
        if i >= 25:  # ... and moves at frame 25 (after the 5 s cooldown)
            frame[30:70, 40:90] = _noise_frame(rng)[30:70, 40:90]
            frame[50:90, 90:140] = (230, 230, 230)
        if m.update(frame, now=i * 0.5):
            fired.append(i)
    assert fired == [10, 25], f"noise must not fire; appearance and move must: {fired}"


def test_motion_cooldown_and_consecutive_frames():
    m = MotionTrigger(
        MotionConfig(
            enabled=True,
            threshold=20,
            min_area=0.05,
            frames=2,
            cooldown_s=10.0,
            background_alpha=1.0,
        )
    )
    a = np.zeros((60, 80, 3), np.uint8)
    b = np.full((60, 80, 3), 255, np.uint8)
    seq = [a, b, a, b, a, b, a]
    fired = [i for i, f in enumerate(seq) if m.update(f, now=float(i))]
    assert fired == [2]  # needs 2 changed frames in a row; then 10 s of quiet


def test_job_queue_drops_instead_of_piling_up():
    q = JobQueue(1)
    img = np.zeros((2, 2, 3), np.uint8)
    jobs = [Job(i, img, ("motion",), 0.0) for i in range(3)]
    assert q.offer(jobs[0]) and not q.offer(jobs[1]) and len(q) == 1
    prio = Job(9, img, ("http",), 0.0, priority=True)
    evicted = q.put_priority(prio)
    assert [j.frame_id for j in evicted] == [0]
    assert q.get(0.01).frame_id == 9 and q.get(0.0) is None
    stop = threading.Event()
    assert q.put(jobs[2], stop)
    stop.set()
    assert not q.put(jobs[1], stop, poll_s=0.001)  # full and stopping: refused, no wait
    assert [j.frame_id for j in q.drain()] == [2]


def test_job_queue_bound_holds_for_priority_jobs_and_remove():
    q = JobQueue(1)
    img = np.zeros((2, 2, 3), np.uint8)
    first, second = (Job(i, img, ("http",), 0.0, priority=True) for i in range(2))
    assert q.put_priority(first) == []
    assert q.put_priority(second) == [second]  # full of priority jobs: refused, not queued
    assert len(q) == 1
    assert q.remove(lambda j: j.frame_id == 1) == [] and len(q) == 1
    assert q.remove(lambda j: j.frame_id == 0) == [first] and len(q) == 0


# --------------------------------------------------------------------------------------------
# GPIO (gpiozero's mock pin factory)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edge", "pull_up", "actions", "expected"),
    [
        ("falling", True, ["low", "high"], 1),
        ("rising", True, ["low", "high"], 1),
        ("both", True, ["low", "high", "low"], 3),
        ("rising", False, ["high", "low"], 1),
    ],
)
def test_gpio_edges_with_mock_factory(edge, pull_up, actions, expected):
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    woken = threading.Event()
    trig = GpioTrigger(
        GpioConfig(enabled=True, pin=17, edge=edge, pull_up=pull_up, bounce_s=0.0),
        woken.set,
        pin_factory=factory,
    )
    trig.open()
    try:
        pin = factory.pin(17)
        for a in actions:
            pin.drive_low() if a == "low" else pin.drive_high()
        assert trig.take() == expected and trig.take() == 0
        assert woken.is_set()
    finally:
        trig.close()
        factory.close()


def test_gpio_pin_in_use_is_a_clear_error():
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    a = GpioTrigger(GpioConfig(enabled=True, pin=5), pin_factory=factory)
    b = GpioTrigger(GpioConfig(enabled=True, pin=5), pin_factory=factory)
    a.open()
    try:
        with pytest.raises(RuntimeError, match="trigger.gpio: cannot use pin 5"):
            b.open()
    finally:
        a.close()
        factory.close()


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


class FakePicamera2:
    """Records calls; ``capture_array`` returns an RGB888 buffer (B, G, R in memory)."""

    def __init__(self, camera: int, fail: str = "") -> None:
        if fail == "busy":
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.calls: list[tuple] = []
        self.frame = np.zeros((48, 64, 3), np.uint8)
        self.frame[..., 2] = 255  # R in the third byte: a red image in BGR order
        self.stopped = self.closed = False

    def create_video_configuration(self, **kw):
        self.calls.append(("config", kw))
        return kw

    def configure(self, cfg):
        self.calls.append(("configure", cfg))

    def start(self):
        self.calls.append(("start",))

    def capture_array(self, name="main", wait=None):
        self.calls.append(("capture", name, wait))
        return self.frame

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


def test_picamera2_adapter_channel_order_and_calls():
    cams: list[FakePicamera2] = []

    def factory(n):
        cams.append(FakePicamera2(n))
        return cams[-1]

    clock = FakeClock()
    src = PiCameraSource(
        0,
        64,
        48,
        5.0,
        {"AfMode": 2},
        read_timeout_s=3.0,
        settle_s=1.0,
        camera_factory=factory,
        clock=clock,
    )
    t0 = clock.now()
    src.open()
    assert clock.now() - t0 == pytest.approx(1.0)  # AE/AWB settle, on the fake clock
    frame = src.read()
    assert frame.image.shape == (48, 64, 3)
    assert tuple(frame.image[0, 0]) == (0, 0, 255)  # red stays red in BGR
    cfg = cams[0].calls[0][1]
    assert cfg["main"] == {"size": (64, 48), "format": "RGB888"}
    assert cfg["controls"] == {"FrameRate": 5.0, "AfMode": 2}
    assert ("capture", "main", 3.0) in cams[0].calls  # reads time out instead of hanging
    src.close()
    assert cams[0].stopped and cams[0].closed


def test_picamera2_busy_camera_is_a_source_error():
    src = PiCameraSource(
        0, 64, 48, 5.0, {}, camera_factory=lambda n: FakePicamera2(n, "busy"), clock=FakeClock()
    )
    with pytest.raises(SourceError, match="another process owns the camera"):
        src.open()


def test_picamera2_xbgr_frames_drop_the_fourth_channel():
    cam = FakePicamera2(0)
    cam.frame = np.zeros((4, 4, 4), np.uint8)
    src = PiCameraSource(
        0, 4, 4, 5.0, {}, settle_s=0, camera_factory=lambda n: cam, clock=FakeClock()
    )
    src.open()
    assert src.read().image.shape == (4, 4, 3)


class FakeCapture:
    def __init__(self, target, frames=3, opened=True):
        self.target, self.left, self.opened = target, frames, opened
        self.props: dict = {}
        self.grabs = 0

    def isOpened(self):  # noqa: N802
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def grab(self):
        self.grabs += 1
        return True

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((8, 8, 3), 7, np.uint8)

    def release(self):
        self.opened = False


def test_opencv_source_open_read_disconnect():
    caps: list[FakeCapture] = []

    def factory(target):
        caps.append(FakeCapture(target, frames=2))
        return caps[-1]

    src = OpenCVSource(
        "0", 640, 480, 5.0, discard_frames=3, capture_factory=factory, clock=FakeClock()
    )
    src.open()
    assert caps[0].target == 0 and caps[0].grabs == 3
    assert src.read().image.shape == (8, 8, 3)
    src.read()
    with pytest.raises(SourceError, match="disconnected"):
        src.read()
    missing = OpenCVSource("/dev/v4l/by-id/nope", 640, 480, 5.0, clock=FakeClock())
    with pytest.raises(SourceError, match="does not exist"):
        missing.open()
    closed = OpenCVSource(
        "1",
        640,
        480,
        5.0,
        capture_factory=lambda t: FakeCapture(t, opened=False),
        clock=FakeClock(),
    )
    with pytest.raises(SourceError, match="video"):
        closed.open()


def test_replay_folder_and_video(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((10, 12, 3), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    src = ReplaySource(tmp_path)
    src.open()
    names = [src.read().name for _ in range(3)]
    assert names == ["f0.png", "f1.png", "f2.png"] and src.read() is None
    looped = ReplaySource(tmp_path, loop=True)
    looped.open()
    assert [looped.read().name for _ in range(4)][-1] == "f0.png"
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    for i in range(4):
        w.write(np.full((24, 32, 3), i * 60, np.uint8))
    w.release()
    vs = ReplaySource(video)
    vs.open()
    frames = []
    while (f := vs.read()) is not None:
        frames.append(f)
    vs.close()
    assert len(frames) == 4 and frames[0].image.shape == (24, 32, 3)
    with pytest.raises(SourceError, match="no images"):
        ReplaySource(tmp_path / "empty").open() if (tmp_path / "empty").mkdir() is None else 0


def test_resilient_source_backs_off_and_recovers():
    clock = FakeClock()
    flaky = FlakySource(DemoSource(1_000_000, 5, 64, 48), open_failures=3, clock=clock)
    errors = []
    src = ResilientSource(flaky, clock, backoff_s=1.0, backoff_max_s=3.0, on_error=errors.append)
    delays = []
    frame = None
    while frame is None:
        try:
            frame = src.read()
        except SourceDown as exc:
            delays.append(exc.retry_in)
            clock.advance(exc.retry_in)
    assert delays == [1.0, 2.0, 3.0]  # doubling, capped at backoff_max_s
    assert len(errors) == 3 and frame.index == 1
    opens = flaky.open_times
    assert [round(b - a, 6) for a, b in zip(opens, opens[1:], strict=False)] == [1.0, 2.0, 3.0]
    flaky.read_failures = (flaky.reads + 1,)
    with pytest.raises(SourceDown):
        src.read()  # a read failure closes the source ...
    clock.advance(1.0)
    assert src.read().index == 2  # ... and it is reopened after the (reset) backoff


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------


def test_orientation_roi_and_resolution_cap():
    img = np.zeros((30, 40, 3), np.uint8)
    img[0, 0] = (255, 0, 0)  # marker at top-left
    cases = {
        (True, False, 0): (0, 39),
        (False, True, 0): (29, 0),
        (False, False, 90): (0, 29),
        (False, False, 180): (29, 39),
        (False, False, 270): (39, 0),
    }
    for (h, v, r), (y, x) in cases.items():
        out, cap = FrameTransform(h, v, r)(img)
        assert out[y, x, 0] == 255, (h, v, r)
    cfg = ServiceConfig().replace(
        **{"processing.roi": [10, 5, 20, 10], "processing.max_mask_side": 0}
    )
    out, cap = FrameTransform.from_config(cfg)(img)
    assert out.shape == (10, 20, 3) and cap.roi == (10, 5, 20, 10) and cap.scale == 1.0
    # a 12 MP still is capped before segmentation: masks can never be 12 MP
    big = np.zeros((3000, 4000, 3), np.uint8)
    out, cap = FrameTransform(max_side=1280)(big)
    assert out.shape == (960, 1280, 3) and cap.scale == pytest.approx(0.32)
    assert cap.to_dict()["width"] == 4000
    out, cap = FrameTransform(roi=(30, 20, 100, 100))(img)  # clipped to the frame
    assert out.shape == (10, 10, 3)
    with pytest.raises(Exception, match="processing.roi"):
        FrameTransform(roi=(100, 100, 5, 5))(img)


def test_padding_waste():
    assert padding_waste((320, 320), (320, 320), False) == pytest.approx(0.0)
    assert padding_waste((480, 640), (640, 640), False) == pytest.approx(0.25)
    assert padding_waste((1080, 1920), (640, 640), False) == pytest.approx(0.4375)
    assert padding_waste((480, 640), (640, 640), True) == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------
# metrics, sd_notify
# --------------------------------------------------------------------------------------------


def test_metrics_prometheus_text():
    m = Metrics()
    m.inc("fastsam_frames_total", 3)
    m.inc("fastsam_dropped_total", reason="busy")
    m.inc("fastsam_dropped_total", 2, reason="busy")
    m.observe("fastsam_latency_seconds", 0.07)
    m.observe("fastsam_latency_seconds", 3.0)
    text = m.render()
    assert "# TYPE fastsam_frames_total counter\nfastsam_frames_total 3\n" in text
    assert 'fastsam_dropped_total{reason="busy"} 3' in text
    assert 'fastsam_latency_seconds_bucket{le="0.1"} 1' in text
    assert 'fastsam_latency_seconds_bucket{le="5"} 2' in text
    assert 'fastsam_latency_seconds_bucket{le="+Inf"} 2' in text
    assert "fastsam_latency_seconds_count 2" in text
    assert m.get("fastsam_dropped_total") == 3
    with pytest.raises(KeyError):
        m.inc("fastsam_made_up_total")


def test_sd_notify_over_a_socket(tmp_path):
    sock = NotifySocket(tmp_path)
    try:
        n = Notifier(sock.env(watchdog_usec=4_000_000))
        assert n.enabled and n.watchdog_s == 4.0
        assert n.ready("hello")
        assert sock.drain() == ["READY=1\nSTATUS=hello"]
        pinger = WatchdogPinger(n)
        sent = [pinger.progress(t) for t in (0.0, 0.5, 1.0, 1.5, 2.5)]
        assert sent == [True, False, True, False, True]  # at most every period / 4
        assert sock.count("WATCHDOG=1") == 3
        n.stopping()
        assert sock.drain()[-1].startswith("STOPPING=1")
    finally:
        sock.close()
    off = Notifier({})
    assert not off.enabled and not off.ready() and off.watchdog_s is None
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None  # the watchdog is meant for another process


def test_sd_notify_abstract_socket_address():
    n = Notifier({"NOTIFY_SOCKET": "@fastsam-test"})
    assert n.address == b"\0fastsam-test"


# --------------------------------------------------------------------------------------------
# MQTT (a fake paho client; a real broker is exercised by hand, see docs/service.md)
# --------------------------------------------------------------------------------------------


def test_mqtt_publisher_topics_will_and_discovery(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = MqttConfig(
        enabled=True,
        topic_prefix="cam/garage",
        username="u",
        password_file=str(pw),
        discovery=True,
        client_id="pi1",
    )
    clients: list[FakeMqttClient] = []

    def factory(cid):
        clients.append(FakeMqttClient(cid))
        return clients[-1]

    pub = MqttPublisher(cfg, factory)
    pub.start()
    c = clients[0]
    assert c.client_id == "pi1" and c.auth == ("u", "s3cret") and c.loop_running
    assert c.will == ("cam/garage/available", "offline", 1, True)
    c.connect()
    assert ("cam/garage/available", "online", 1, True) in c.published
    disc = [p for p in c.published if p[0] == "homeassistant/sensor/pi1/masks/config"]
    assert disc and json.loads(disc[0][1])["state_topic"] == "cam/garage/state"
    assert c.subscribed == ["cam/garage/trigger"]
    doc = {
        "frame_id": 7,
        "timestamp": "t",
        "trigger": "motion",
        "num_masks": 2,
        "image": {"width": 64, "height": 48},
        "bundle": {"name": "b"},
        "masks": [
            {
                "id": i,
                "score": 0.9,
                "bbox_xyxy": [0, 0, 1, 1],
                "area": 1,
                "rle": {},
                "polygons": [],
            }
            for i in range(2)
        ],
    }
    msg = compact_message(doc, 1, {"json": "result.json"}, "/out/r1", 12.34)
    pub.publish(msg)
    results = [p for p in c.published if p[0] == "cam/garage/results"]
    state = [p for p in c.published if p[0] == "cam/garage/state"]
    assert len(results) == 1 and not results[0][3] and state[0][3]  # state is retained
    assert not [p for p in c.published if p[0] == "cam/garage/events"]  # track events only
    body = json.loads(results[0][1])
    assert body["frame_id"] == 7 and len(body["masks"]) == 1 and "rle" not in body["masks"][0]
    assert body["files"]["json"] == "/out/r1/result.json"
    pub.stop()
    assert c.published[-1] == ("cam/garage/available", "offline", 1, True)
    assert c.disconnected and not c.loop_running


def test_mqtt_discovery_device_entities_default_entity_id():
    cfg = MqttConfig(enabled=True, topic_prefix="cam/garage", discovery=True, client_id="Pi-1")
    msgs = discovery_messages(cfg, cfg.topic_prefix, "9.9")
    by_component = {topic.split("/")[1]: json.loads(json.dumps(c)) for topic, c in msgs.items()}
    assert sorted(msgs) == [
        "homeassistant/button/pi_1/capture/config",
        "homeassistant/camera/pi_1/last_result/config",
        "homeassistant/sensor/pi_1/masks/config",
    ]
    for component, conf in by_component.items():
        assert "object_id" not in conf  # deprecated by Home Assistant 2025.10
        assert conf["default_entity_id"].startswith(f"{component}.pi_1_")
        assert conf["device"]["identifiers"] == ["pi_1"] and conf["device"]["sw_version"] == "9.9"
        assert conf["availability_topic"] == "cam/garage/available"
        assert conf["unique_id"] == conf["default_entity_id"].split(".", 1)[1]
    assert by_component["sensor"]["value_template"] == "{{ value_json.num_masks }}"
    assert by_component["camera"]["topic"] == "cam/garage/overlay"
    assert by_component["button"]["command_topic"] == "cam/garage/trigger"
    no_image = discovery_messages(MqttConfig(image=False), "p")
    assert not any("/camera/" in t for t in no_image)


@pytest.mark.parametrize(
    ("word", "slug"),
    [
        ("person", "person"),
        ("red car", "red_car"),
        ("3d printer", "3d_printer"),
        # anything else: transliterated as far as ASCII allows, plus 8 hex of its sha256
        ("red_car", "red_car_17e06b9e"),  # never the slug of "red car"
        ("Dog", "dog_"),
        ("Café/Bar", "cafe_bar_"),
        ("a+b#c", "a_b_c_"),
        ("猫", "w_"),
        ("x" * 60, "x" * 39 + "_"),
    ],
)
def test_word_slug_is_topic_safe_and_unique(word, slug):
    got = word_slug(word)
    assert got == slug if not slug.endswith("_") else got.startswith(slug)
    assert len(got) <= 48 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789_" for c in got)
    assert word_slug(word) == got  # a word's slug never depends on anything else


def test_mqtt_word_count_sensors_and_counts_in_the_state():
    cfg = MqttConfig(enabled=True, topic_prefix="cam", discovery=True, client_id="pi")
    words = ("person", "Café/Bar")
    msgs = discovery_messages(cfg, "cam", "1", words=words)
    person = msgs["homeassistant/sensor/pi/count_person/config"]
    assert person["unique_id"] == "pi_count_person"
    assert person["default_entity_id"] == "sensor.pi_count_person"
    assert person["state_topic"] == "cam/state" and person["availability_topic"] == "cam/available"
    assert person["device"]["identifiers"] == ["pi"] and person["name"] == "person count"
    assert person["value_template"] == '{{ (value_json.counts or {}).get("person", 0) }}'
    cafe = msgs[f"homeassistant/sensor/pi/count_{word_slug('Café/Bar')}/config"]
    assert cafe["value_template"] == count_template("Café/Bar")
    assert "\\u00e9" in cafe["value_template"]  # JSON escapes: any word is a safe literal
    assert len(msgs) == len(discovery_messages(cfg, "cam", "1")) + 2
    doc = {
        "frame_id": 1,
        "vocabulary": ["person", "dog"],
        "masks": [{"id": 0, "label": "person", "class_id": 0}, {"id": 1, "label": "person"}],
    }
    msg = compact_message(doc, 10, None, None, 1.0)
    assert msg["counts"] == {"person": 2, "dog": 0} and msg["masks"][0]["label"] == "person"
    agnostic = compact_message({"masks": [{"id": 0, "label": None}]}, 10, None, None, 1.0)
    assert "counts" not in agnostic and "label" not in agnostic["masks"][0]


@pytest.mark.export  # Jinja (Home Assistant's templates) comes with the export extra (torch)
@pytest.mark.parametrize("word", ["person", 'say "hi"', "{{ x }}", "Café/Bar", "猫", "a\\b"])
def test_mqtt_count_template_renders_in_jinja(word):
    import jinja2

    template = jinja2.Environment().from_string(count_template(word))
    assert template.render(value_json={"counts": {word: 3, "other": 9}}) == "3"
    assert template.render(value_json={"counts": {}}) == "0"
    assert template.render(value_json={"num_masks": 1}) == "0"  # a class-agnostic result


def test_mqtt_trigger_topic_counts_presses_not_retained():
    woke = []
    client = FakeMqttClient("x")
    pub = MqttPublisher(
        MqttConfig(enabled=True, topic_prefix="p"),
        lambda cid: client,
        on_trigger=lambda: woke.append(1),
    )
    pub.start()
    client.connect()
    client.deliver("p/trigger", b"PRESS")
    client.deliver("p/trigger", b"PRESS", retain=True)  # left on the broker: ignored
    client.deliver("p/other", b"PRESS")
    client.deliver("p/trigger", b"anything")
    assert pub.take() == 2 and pub.take() == 0 and len(woke) == 2


def test_mqtt_unanswered_broker_warns_once_reports_and_recovers(caplog):
    clock = FakeClock()
    metrics = Metrics()
    client = FakeMqttClient("x")
    cfg = MqttConfig(enabled=True, host="broker.lan", port=1884, keepalive_s=10)
    pub = MqttPublisher(cfg, lambda cid: client, metrics, now=clock.now)
    pub.start()
    assert metrics.get("fastsam_mqtt_connected") == 0
    with caplog.at_level(logging.WARNING, logger="edge.service.mqtt"):
        clock.advance(4.9)
        pub.poll()
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert pub.problem() is None and not warned  # within the grace period
        clock.advance(0.2)
        pub.poll()
        pub.poll()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "broker.lan:1884" in warnings[0].getMessage()
        assert "no connection to broker.lan:1884 for 5 s" in pub.problem()
        assert metrics.get("fastsam_errors_total") == 1
        client.connect()
        assert pub.problem() is None and metrics.get("fastsam_mqtt_connected") == 1
        client.on_disconnect(client, None, None, "keepalive timeout", None)
        assert metrics.get("fastsam_mqtt_connected") == 0 and pub.problem() is None
        clock.advance(6)
        pub.poll()
        assert "keepalive timeout" in pub.problem()
        assert metrics.get("fastsam_errors_total") == 2  # a second outage, a second warning


def test_mqtt_missing_paho_is_a_clear_error(monkeypatch):
    import sys

    from edge.service.config import ConfigError
    from edge.service.mqtt import default_client_factory

    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(ConfigError, match="paho-mqtt is not installed"):
        default_client_factory("x")


def test_mqtt_real_paho_client_is_constructed():
    from edge.service.mqtt import default_client_factory

    client = default_client_factory("fastsam-test")
    assert hasattr(client, "connect_async") and hasattr(client, "will_set")


def test_list_source_and_demo_source():
    src = ListSource([np.zeros((4, 4, 3), np.uint8)] * 2)
    src.open()
    assert src.read() is not None and src.read() is not None and src.read() is None
    demo = DemoSource(1_000_000, 2, 64, 48, loop=True)
    demo.open()
    a, b, c = demo.read(), demo.read(), demo.read()
    assert a.image.shape == (48, 64, 3) and np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize(
    ("frame", "shape", "error"),
    [
        (np.zeros((4, 6, 3), np.uint8), (4, 6, 3), None),
        (np.zeros((4, 6), np.uint8), (4, 6, 3), None),
        (np.zeros((4, 6, 4), np.uint8), (4, 6, 3), None),
        (np.zeros((4, 6, 3), np.uint8)[:, ::2], (4, 3, 3), None),  # made contiguous
        (None, None, "cam: empty frame"),
        (np.zeros((0, 6, 3), np.uint8), None, "cam: empty frame"),
        (np.zeros((4, 6, 3), np.float32), None, "cam: frame: expected dtype uint8"),
        (np.zeros((4, 6, 5), np.uint8), None, "cam: frame: expected shape"),
    ],
)
def test_source_frames_get_the_segmenters_normalisation(frame, shape, error):
    """Sources and the segmenter share one normalisation (edge.preprocess.normalize_image)."""
    from edge.preprocess import normalize_image
    from edge.service.sources import SourceError, _as_bgr

    if error is not None:
        with pytest.raises(SourceError, match=error):
            _as_bgr(frame, "cam")
        return
    out = _as_bgr(frame, "cam")
    assert out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, normalize_image(frame))
    assert normalize_image(out) is out  # the segmenter's check copies nothing


@pytest.mark.parametrize(
    ("prefilter", "shortlist", "error"),
    [
        ("auto", 10, None),
        ("score", 4, None),
        ("dense", 10, "processing.text_prefilter: 'dense' needs a CLIP with a dense image"),
    ],
)
def test_load_segmenter_text_prefilter(prefilter, shortlist, error):
    """The text prefilter settings reach the segmenter; 'dense' on a ViT bundle (the demo's)
    is a start-up error naming the key."""
    from edge.service.config import ConfigError
    from edge.service.runner import load_segmenter

    cfg = ServiceConfig().replace(
        **{"processing.text_prefilter": prefilter, "processing.text_shortlist": shortlist}
    )
    if error:
        with pytest.raises(ConfigError, match=error):
            load_segmenter(cfg)
        return
    seg = load_segmenter(cfg)
    assert (seg.text.prefilter, seg.text.shortlist) == (prefilter, shortlist)


@pytest.mark.parametrize(
    ("env", "expected"),
    [(None, "out/.state"), ("/var/lib/fastsam-edge", "/var/lib/fastsam-edge"), ("/a:/b", "/a")],
)
def test_load_segmenter_state_dir_from_systemd(monkeypatch, env, expected):
    """Text embeddings persist in the service's state directory (service.state_dir, else
    systemd's $STATE_DIRECTORY's first entry, else <output.dir>/.state)."""
    from edge.service.runner import load_segmenter

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    if env is not None:
        monkeypatch.setenv("STATE_DIRECTORY", env)
    cfg = ServiceConfig()
    cfg = replace(cfg, output=replace(cfg.output, dir="out"))
    seg = load_segmenter(cfg)
    assert seg.state_dir == Path(expected)
    assert not seg.clip_keep_text  # the text session only while new texts are encoded


@pytest.mark.parametrize(
    ("key", "value"),
    [("processing.text_prefilter", "fast"), ("processing.text_shortlist", 0)],
)
def test_text_prefilter_config_is_checked(key, value):
    from edge.service.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ServiceConfig().replace(**{key: value})


class _QueueFullInfo:
    rc = 15  # paho's MQTT_ERR_QUEUE_SIZE


def _result_message(i: int) -> dict:
    return {"frame_id": i, "num_masks": 0, "masks": []}


def test_mqtt_outage_keeps_the_newest_results_and_counts_drops(caplog):
    from edge.service.mqtt import MAX_PENDING

    metrics = Metrics()
    client = FakeMqttClient("x")
    pub = MqttPublisher(MqttConfig(enabled=True, topic_prefix="p"), lambda cid: client, metrics)
    pub.start()
    n = MAX_PENDING + 30
    with caplog.at_level(logging.INFO, logger="edge.service.mqtt"):
        for i in range(n):  # the broker is away: nothing reaches paho, nothing is logged
            pub.publish(_result_message(i))
        assert not [r for r in caplog.records if "publish" in r.getMessage()]
        assert client.topics() == [] and metrics.get("fastsam_mqtt_dropped_total") == 30
        client.connect()
    results = [json.loads(p[1])["frame_id"] for p in client.published if p[0] == "p/results"]
    assert results == list(range(n - MAX_PENDING, n))  # the newest, in order
    assert "16 result(s) sent now, 30 dropped" in caplog.text


def test_mqtt_full_paho_queue_is_counted_and_logged_once_a_minute(caplog):
    clock = FakeClock()
    metrics = Metrics()
    client = FakeMqttClient("x")
    client.publish = lambda *a, **k: _QueueFullInfo()  # type: ignore[method-assign]
    pub = MqttPublisher(
        MqttConfig(enabled=True, topic_prefix="p"), lambda cid: client, metrics, now=clock.now
    )
    pub.start()
    client.on_connect(client, None, {}, 0, None)

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if "publish failed" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="edge.service.mqtt"):
        for _ in range(50):
            pub.publish(_result_message(1))
            clock.advance(0.5)
        assert len(failures()) == 1  # not 50
        clock.advance(60)
        pub.publish(_result_message(2))
        assert len(failures()) == 2 and "50 time(s)" in failures()[1]
    assert metrics.get("fastsam_mqtt_dropped_total") == 51


def test_mqtt_connected_but_silent_broker_is_a_problem():
    clock = FakeClock()
    client = FakeMqttClient("x")
    cfg = MqttConfig(enabled=True, host="b", keepalive_s=20)
    pub = MqttPublisher(cfg, lambda cid: client, Metrics(), now=clock.now)
    pub.start()
    assert pub.ping_s == 10  # paho pings every half of keepalive_s
    client.on_log(client, None, 16, "Received CONNACK (0, Success)")
    client.connect()
    clock.advance(14.9)
    assert pub.problem() is None  # a ping's answer may still come
    client.on_log(client, None, 16, "Received PINGRESP")
    clock.advance(14.9)
    assert pub.problem() is None
    clock.advance(0.2)  # 15 s of silence: 3/4 of keepalive_s
    assert "has not answered for 15 s" in (pub.problem() or "")
    client.on_disconnect(client, None, None, "keepalive timeout", None)  # paho gives up
    assert "no connection to b:1883 for 15 s" in (pub.problem() or "")  # since last contact


def test_mqtt_press_flood_logs_one_line_per_burst(caplog):
    client = FakeMqttClient("x")
    pub = MqttPublisher(MqttConfig(enabled=True, topic_prefix="p"), lambda cid: client)
    pub.start()
    client.connect()

    def presses() -> list[str]:
        return [r.getMessage() for r in caplog.records if "capture request" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="edge.service.mqtt"):
        for _ in range(1000):
            client.deliver("p/trigger", b"PRESS")
        assert not presses()  # DEBUG only
        assert pub.take() == 1000 and pub.take() == 0
    (line,) = presses()
    assert "1000 capture request(s)" in line and "merged" in line


def test_mqtt_connects_with_the_v5_maximum_packet_size():
    from edge.service.mqtt import connect_properties, default_client_factory

    props = connect_properties(4096)
    assert props.MaximumPacketSize == 4096
    assert int(default_client_factory("a").protocol) == 5
    assert int(default_client_factory("a", protocol="3.1.1").protocol) == 4


def test_service_counts_merged_presses(tmp_path, caplog):
    from fakes import FakeSegmenter

    from edge.service.config import demo_config
    from edge.service.runner import Service

    client = FakeMqttClient("x")
    cfg = demo_config(
        tmp_path / "out",
        **{
            "source.width": 64,
            "source.height": 48,
            "source.loop": True,
            "trigger.interval.enabled": False,
            "model.warmup": False,
            "mqtt.enabled": True,
            "mqtt.topic_prefix": "p",
        },
    )
    svc = Service(cfg, segmenter=FakeSegmenter(), mqtt_client_factory=lambda cid: client)
    thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    with caplog.at_level(logging.INFO, logger="edge.service.mqtt"):
        thread.start()
        try:
            assert svc.ready.wait(60)
            client.connect()
            for _ in range(200):
                client.deliver("p/trigger", b"PRESS")
            deadline = time.monotonic() + 60
            while svc.metrics.get("fastsam_triggers_total", trigger="mqtt") < 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            svc.request_stop("test")
            thread.join(60)
    bursts = [r for r in caplog.records if "capture request(s)" in r.getMessage()]
    merged = svc.metrics.get("fastsam_triggers_merged_total", trigger="mqtt")
    assert 1 <= len(bursts) < 200 and merged == 200 - len(bursts)
