"""MQTT against a real broker: Debian's ``mosquitto``, started here on a free loopback port.

Checks what Home Assistant and other subscribers see: the published topics, the retained
discovery messages (``default_entity_id``, one device, sensor + camera + button), the retained
overlay JPEG, a capture triggered from the button's topic, the last will of a killed service,
and a broker that never answers (warning, ``/healthz`` problem, ``fastsam_mqtt_connected 0``).

``scripts/test.sh`` installs mosquitto (apt) where it is missing; without it these tests fail
rather than skip, so CI cannot pass without them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeSegmenter, FakeTextTower, yoloe_segmenter

from edge.service.config import demo_config
from edge.service.runner import Service

mqtt = pytest.importorskip("paho.mqtt.client")  # the test extra installs it everywhere

REPO = Path(__file__).resolve().parents[1]
WAIT = 60.0  # upper bound for event waits on a loaded CI machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).is_file()), None
    )
    if found is None:
        pytest.fail("mosquitto is not installed: apt-get install mosquitto (scripts/test.sh does)")
    return found


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """A private mosquitto on 127.0.0.1:<free port>; yields the port."""
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    proc = subprocess.Popen(
        [_mosquitto(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.communicate(timeout=5)[0].decode(errors="replace")
                    pytest.fail(f"mosquitto did not start on port {port}: {out[-2000:]}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Subscriber:
    """A paho client subscribed to ``topics`` that records (topic, payload, retain)."""

    def __init__(self, port: int, *topics: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT), "subscriber did not subscribe"

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))  # type: ignore[attr-defined]
            self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[tuple[str, bytes, bool]], bool], timeout: float = WAIT
    ) -> tuple[str, bytes, bool]:
        """The first recorded message matching ``pred`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(t, p[:60], r) for t, p, r in self.messages]
                    raise AssertionError(f"no matching message within {timeout:g} s; got {seen}")
                self._cond.wait(left)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _topic(name: str) -> Callable[[tuple[str, bytes, bool]], bool]:
    return lambda m: m[0] == name


def _service(out: Path, port: int, segmenter: object = None, **changes: object) -> Service:
    base: dict[str, object] = {
        "source.width": 160,
        "source.height": 120,
        "source.count": 2,
        "source.loop": True,
        "trigger.interval.enabled": False,  # only the button triggers
        "model.warmup": False,
        "mqtt.enabled": True,
        "mqtt.host": "127.0.0.1",
        "mqtt.port": port,
        "mqtt.keepalive_s": 5,
        "mqtt.client_id": "fse-test",
        "mqtt.topic_prefix": "fse/t1",
        "mqtt.discovery": True,
        "service.status_interval_s": 0.0,
    }
    base.update(changes)
    return Service(demo_config(out, **base), segmenter=segmenter or FakeSegmenter())


def test_broker_topics_retained_discovery_and_button_trigger(tmp_path, broker):
    live = Subscriber(broker, "fse/t1/#")
    svc = _service(tmp_path / "out", broker)
    thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        assert svc.ready.wait(WAIT)
        live.wait_for(lambda m: m[0] == "fse/t1/available" and m[1] == b"online")
        # a subscriber that arrives later (Home Assistant restarting) gets discovery retained
        late = Subscriber(broker, "homeassistant/#")
        configs = {
            kind: late.wait_for(lambda m, k=kind: m[0].startswith(f"homeassistant/{k}/"))
            for kind in ("sensor", "camera", "button")
        }
        late.close()
        assert {t for t, _, _ in configs.values()} == {
            "homeassistant/sensor/fse_test/masks/config",
            "homeassistant/camera/fse_test/last_result/config",
            "homeassistant/button/fse_test/capture/config",
        }
        docs = {kind: json.loads(p) for kind, (_, p, _) in configs.items()}
        assert all(retained for _, _, retained in configs.values())
        for kind, doc in docs.items():
            assert "object_id" not in doc and doc["default_entity_id"].startswith(f"{kind}.")
            assert doc["device"]["identifiers"] == ["fse_test"]
        assert not live.messages or all(t != "fse/t1/results" for t, _, _ in live.messages)

        # the Home Assistant button: publish its payload to its command topic
        button = docs["button"]
        live.publish(button["command_topic"], button["payload_press"].encode())
        _, event, retained = live.wait_for(_topic("fse/t1/results"))
        body = json.loads(event)
        assert not retained and body["trigger"] == "mqtt" and body["num_masks"] == 1
        live.wait_for(_topic(docs["camera"]["topic"]))
        # retained (a live subscriber's copy never carries the flag): ask as a newcomer
        late = Subscriber(broker, docs["camera"]["topic"], docs["sensor"]["state_topic"])
        _, jpeg, retained = late.wait_for(_topic(docs["camera"]["topic"]))
        assert retained and jpeg[:3] == b"\xff\xd8\xff"  # JPEG for the camera entity
        _, state, retained = late.wait_for(_topic(docs["sensor"]["state_topic"]))
        assert retained and json.loads(state)["frame_id"] == body["frame_id"]
        late.close()
        assert svc.metrics.get("fastsam_mqtt_connected") == 1
        assert svc.metrics.get("fastsam_triggers_total", trigger="mqtt") == 1
        code, health = svc.health()
        assert code == 200 and health["mqtt"] == {
            "connected": True,
            "broker": f"127.0.0.1:{broker}",
        }
    finally:
        svc.request_stop("test over")
        thread.join(WAIT)
    assert svc.summary.errors == 0 and svc.summary.results == 1
    live.wait_for(lambda m: m[0] == "fse/t1/available" and m[1] == b"offline")
    live.close()


KILLED_SERVICE = """
import sys, time
from edge.service.config import MqttConfig
from edge.service.mqtt import MqttPublisher
pub = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]),
                               keepalive_s=5, client_id="fse-will", topic_prefix="fse/will"))
pub.start()
while not pub.connected:
    time.sleep(0.02)
print("connected", flush=True)
time.sleep(600)
"""


def test_broker_last_will_when_the_service_dies(broker):
    sub = Subscriber(broker, "fse/will/available")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SERVICE, str(broker)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        sub.wait_for(lambda m: m[1] == b"online")
        proc.kill()  # no clean disconnect: the broker publishes the will
        proc.wait(WAIT)
        _, payload, _ = sub.wait_for(lambda m: m[1] == b"offline")
        assert payload == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    # the will was retained: a new subscriber sees the service offline
    late = Subscriber(broker, "fse/will/available")
    _, payload, retained = late.wait_for(lambda m: True)
    assert (payload, retained) == (b"offline", True)
    late.close()


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers (a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(server.getsockname()[1])
    stop.set()
    t.join(5)
    for s in held:
        s.close()
    server.close()


def test_unanswering_broker_warns_within_keepalive(tmp_path, silent_broker, caplog):
    svc = _service(tmp_path / "out", silent_broker)
    keepalive = svc.cfg.mqtt.keepalive_s
    thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    with caplog.at_level(logging.WARNING, logger="edge.service.mqtt"):
        t0 = time.monotonic()
        thread.start()
        try:
            assert svc.ready.wait(WAIT)

            def warnings() -> list[logging.LogRecord]:
                return [r for r in caplog.records if r.levelno == logging.WARNING]

            while time.monotonic() - t0 < keepalive + 1 and not warnings():
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            assert warnings(), f"no warning within {elapsed:.1f} s"
            assert elapsed <= keepalive, f"warned after {elapsed:.1f} s > keepalive_s {keepalive}"
            assert f"127.0.0.1:{silent_broker}" in warnings()[0].getMessage()
            code, health = svc.health()
            assert code == 503 and any(
                p.startswith("mqtt: no connection") for p in health["problems"]
            )
            assert health["mqtt"]["connected"] is False
            assert "fastsam_mqtt_connected 0" in svc.metrics_text().splitlines()
            assert svc.metrics.get("fastsam_errors_total", kind="mqtt") == 1
        finally:
            svc.request_stop("test over")
            thread.join(WAIT)
    assert svc.summary.errors >= 1  # the summary line no longer says "0 errors"


def _running(svc: Service) -> threading.Thread:
    thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    assert svc.ready.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while not (svc.mqtt is not None and svc.mqtt.connected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.mqtt is not None and svc.mqtt.connected
    return thread


def _stop(svc: Service, thread: threading.Thread) -> None:
    svc.request_stop("test")
    thread.join(WAIT)
    assert not thread.is_alive()


def test_a_message_over_max_packet_bytes_never_reaches_the_service(tmp_path, broker):
    svc = _service(tmp_path / "out", broker, **{"mqtt.max_packet_bytes": 4096})
    thread = _running(svc)
    sender = Subscriber(broker, "fse/t1/available")
    try:
        assert svc.mqtt is not None
        assert int(svc.mqtt.client.protocol) == 5  # the bound travels in the v5 CONNECT
        sender.publish("fse/t1/trigger", b"x" * (2 << 20))  # 2 MiB: dropped by the broker
        sender.publish("fse/t1/trigger", b"PRESS")  # after it, in order: this one arrives
        deadline = time.monotonic() + WAIT
        while svc.metrics.get("fastsam_triggers_total", trigger="mqtt") < 1:
            assert time.monotonic() < deadline, "the small press never arrived"
            time.sleep(0.05)
        assert svc.metrics.get("fastsam_triggers_total", trigger="mqtt") == 1  # not 2
        assert svc.mqtt.connected  # the big one did not cost the connection
    finally:
        sender.close()
        _stop(svc, thread)


def test_a_broker_that_stops_answering_is_reported_within_keepalive(tmp_path, broker):
    import signal

    svc = _service(tmp_path / "out", broker)
    keepalive = svc.cfg.mqtt.keepalive_s
    thread = _running(svc)
    (pid,) = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _is_mosquitto_on(p, broker)
    ]
    os.kill(pid, signal.SIGSTOP)  # accepts (the kernel does), never answers
    try:
        t0 = time.monotonic()
        problem = None
        while time.monotonic() - t0 < keepalive + 2 and problem is None:
            problem = svc.mqtt.problem() if svc.mqtt is not None else None
            time.sleep(0.05)
        # paho pings every keepalive_s / 2: the silence shows before paho gives up at
        # keepalive_s (before, only after paho's own 1.5-2 x keepalive_s and the grace)
        assert problem is not None, f"not reported within {keepalive + 2} s"
        code, health = svc.health()
        assert code == 503 and any(p.startswith("mqtt: ") for p in health["problems"])
    finally:
        os.kill(pid, signal.SIGCONT)
        _stop(svc, thread)


def _is_mosquitto_on(proc_dir: Path, port: int) -> bool:
    try:
        cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not cmdline or not cmdline[0].endswith(b"mosquitto") or len(cmdline) < 3:
        return False
    try:
        return f"listener {port} " in Path(cmdline[2].decode()).read_text()
    except OSError:
        return False


WORDS_CONFIG = "homeassistant/sensor/fse_test/count_{}/config"


def _word_configs(port: int) -> dict[str, dict]:
    """What a subscriber arriving now (Home Assistant restarting) gets: the retained word
    count sensors' configs, by object id."""
    late = Subscriber(port, "homeassistant/#")
    late.wait_for(_topic("homeassistant/sensor/fse_test/masks/config"))  # the retained set
    time.sleep(0.5)  # the rest of the retained messages follow in the same burst
    late.close()
    return {
        t.split("/")[3]: json.loads(p)
        for t, p, _ in late.messages
        if t.startswith("homeassistant/sensor/fse_test/count_") and p
    }


def test_word_count_entities_follow_the_vocabulary_across_restarts(tmp_path, broker, demo_bundle):
    """One count sensor per vocabulary word: added and removed (empty retained config) as the
    vocabulary changes at runtime, and across a restart with another vocabulary."""
    out = tmp_path / "out"
    live = Subscriber(broker, "homeassistant/#", "fse/t1/state")
    svc = _service(out, broker, yoloe_segmenter(demo_bundle, tower=FakeTextTower()))
    thread = _running(svc)
    try:
        configs = _word_configs(broker)
        assert sorted(configs) == ["count_cat", "count_dog"]
        dog = configs["count_dog"]
        assert dog["unique_id"] == "fse_test_count_dog" and dog["device"]["identifiers"] == [
            "fse_test"
        ]
        assert dog["availability_topic"] == "fse/t1/available" and dog["state_topic"] == (
            "fse/t1/state"
        )
        assert dog["value_template"] == '{{ (value_json.counts or {}).get("dog", 0) }}'

        assert svc.vocabulary.request(["dog", "red bird"])[0] == 200
        live.wait_for(lambda m: m[0] == WORDS_CONFIG.format("cat") and m[1] == b"")  # removed
        live.wait_for(_topic(WORDS_CONFIG.format("red_bird")))  # added
        assert sorted(_word_configs(broker)) == ["count_dog", "count_red_bird"]

        live.publish("fse/t1/trigger", b"PRESS")  # the next frame uses the new words
        _, state, _ = live.wait_for(_topic("fse/t1/state"))
        body = json.loads(state)
        assert set(body["counts"]) == {"dog", "red bird"}
        assert sum(body["counts"].values()) == body["num_masks"] >= 1
    finally:
        _stop(svc, thread)
    saved = json.loads((out / ".state" / "mqtt-entities.json").read_text())
    assert saved["topics"] == [WORDS_CONFIG.format(w) for w in ("dog", "red_bird")]

    # restarted with an edited configuration: its words, the others' entities removed
    svc = _service(
        out,
        broker,
        yoloe_segmenter(demo_bundle, tower=FakeTextTower()),
        **{"processing.vocabulary": ["zebra"]},
    )
    thread = _running(svc)
    try:
        live.wait_for(lambda m: m[0] == WORDS_CONFIG.format("red_bird") and m[1] == b"")
        assert sorted(_word_configs(broker)) == ["count_zebra"]
    finally:
        _stop(svc, thread)
        live.close()
