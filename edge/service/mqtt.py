"""Optional MQTT publishing with paho-mqtt 2.x (imported only when ``[mqtt] enabled``).

Topics, the way Home Assistant and Frigate users expect them:

* ``<prefix>/available``: ``online`` / ``offline``, retained; ``offline`` is also the last will,
  so the broker announces a crashed service.
* ``<prefix>/results``: one compact JSON message per result (not retained).
* ``<prefix>/state``: the same message, retained (the last result).
* ``<prefix>/events``: with ``processing.track``, one JSON message per object that entered or
  left (:mod:`edge.service.events`; not retained). Before tracking existed this topic carried
  the per-result messages, which moved to ``<prefix>/results``.
* ``<prefix>/overlay``: the last result's overlay as JPEG bytes, retained (``mqtt.image``).
* ``<prefix>/trigger``: subscribed; any (non-retained) message triggers a capture, which is
  what the Home Assistant "Capture" button sends.
* with ``discovery = true``, retained Home Assistant discovery messages under
  ``<discovery_prefix>/<component>/<node>/<object>/config`` for one device with a mask-count
  sensor, a "Last result" camera (the overlay topic), a "Capture" button and, with tracking,
  an "Object" event entity (``event_types`` enter / leave, from ``<prefix>/events``) and,
  with an open-vocabulary (YOLOE) bundle, one count sensor per vocabulary word (object
  ``count_<slug>``, :func:`word_slug`; its value is ``counts[word]`` of ``<prefix>/state``).
  Entity ids are suggested with ``default_entity_id`` (``sensor.<node>_masks``), not the
  deprecated ``object_id``. A word that leaves the vocabulary has its entity removed (an
  empty retained config); the announced word entities are remembered in the state
  directory (``mqtt-entities.json``), so a word removed while the service was stopped, or
  across a restart with another vocabulary, is removed too.

The client connects asynchronously and reconnects by itself; a broker that is down never
blocks or stops the service: results wait in a queue of :data:`MAX_PENDING` (the newest kept,
the oldest dropped and counted in ``fastsam_mqtt_dropped_total``) and go out on reconnect. A
broker that does not answer within half of ``keepalive_s`` is logged once as a WARNING per
outage, counted as an error, reported by :meth:`MqttPublisher.problem` (``/healthz``) and
visible as ``fastsam_mqtt_connected 0`` in ``/metrics``; the service loop calls
:meth:`MqttPublisher.poll`. paho pings every ``keepalive_s / 2``, so a broker that accepted
the connection and then stops answering is reported within ``keepalive_s`` too.

Incoming packets are bounded: with ``mqtt.protocol = "5"`` (the default) the CONNECT carries
the MQTT v5 Maximum Packet Size ``mqtt.max_packet_bytes``, and the broker drops anything larger
instead of sending it (a 150 MB message to the trigger topic never reaches the service). With
``"3.1.1"`` only the broker's own limit applies (mosquitto ``message_size_limit``).

Presses of the trigger topic are logged at DEBUG and summed: :meth:`MqttPublisher.take` logs
one INFO line per burst, and presses merged into one capture are counted by the service
(``fastsam_triggers_merged_total``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.service.config import ConfigError, MqttConfig, read_secret_file
from edge.service.state import StateFile
from edge.service.telemetry import Metrics
from edge.service.vocabulary import label_counts

_LOGGER = logging.getLogger(__name__)

MAX_QUEUED = 100
"""Messages paho holds in flight while connected (more: dropped and counted)."""
MAX_PENDING = 16
"""Results kept while the broker is away; the oldest go first."""
ERROR_LOG_INTERVAL_S = 60.0
QUEUE_FULL = 15  # paho's MQTT_ERR_QUEUE_SIZE
NO_CONNECTION = 4  # paho's MQTT_ERR_NO_CONN: queued by paho until it reconnects
ENTITIES_STATE = "mqtt-entities.json"
"""The word entities announced to Home Assistant, in the state directory."""


def default_client_factory(client_id: str, protocol: str = "5") -> Any:
    """A paho-mqtt 2.x client (callback API version 2) speaking MQTT ``protocol``.

    Raises:
        ConfigError: paho-mqtt is not installed.
    """
    try:
        import paho.mqtt.client as mqtt  # optional dependency
    except ImportError as exc:
        raise ConfigError(
            f"mqtt.enabled: paho-mqtt is not installed ({exc}); pip install paho-mqtt "
            "(or fastsam-edge[service]), or set [mqtt] enabled = false"
        ) from None
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version)


def connect_properties(max_packet_bytes: int) -> Any:
    """MQTT v5 CONNECT properties: the Maximum Packet Size the broker may send this client."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = max_packet_bytes
    return props


def compact_message(
    doc: dict[str, Any],
    max_masks: int,
    files: dict[str, str] | None,
    result_dir: str | None,
    latency_ms: float,
) -> dict[str, Any]:
    """The event message: ids, time, trigger, counts, top masks, file paths."""
    keys = ("id", "score", "bbox_xyxy", "area", "label", "track_id")
    masks = [
        {k: m[k] for k in keys if k in m and (k != "label" or m[k] is not None)}
        for m in doc.get("masks", [])[:max_masks]
    ]
    msg: dict[str, Any] = {
        "frame_id": doc.get("frame_id"),
        "timestamp": doc.get("timestamp"),
        "trigger": doc.get("trigger"),
        "num_masks": doc.get("num_masks", len(doc.get("masks", []))),
        "masks": masks,
        "image": {k: doc.get("image", {}).get(k) for k in ("width", "height")},
        "bundle": doc.get("bundle", {}).get("name"),
        "latency_ms": round(latency_ms, 1),
    }
    counts = label_counts(doc)
    if counts is not None:  # open vocabulary: masks per word (the word count sensors)
        msg["counts"] = counts
    if result_dir is not None and files:
        msg["result_dir"] = result_dir
        msg["files"] = {k: str(Path(result_dir) / v) for k, v in files.items()}
    return msg


def encode_jpeg(image: np.ndarray, max_side: int, quality: int = 85) -> bytes:
    """A BGR image as JPEG bytes, downscaled so its longer side is at most ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    scale = max_side / max(h, w) if max_side else 1.0
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def node_id(client_id: str) -> str:
    """The Home Assistant node / object id for ``client_id`` (``[a-z0-9_]``)."""
    return re.sub(r"[^a-z0-9_]+", "_", client_id.lower()).strip("_") or "fastsam_edge"


_PLAIN_WORD = re.compile(r"[a-z0-9]+( [a-z0-9]+)*")


def word_slug(word: str) -> str:
    """A topic- and entity-id-safe name of a vocabulary word (``[a-z0-9_]``, at most 48).

    A plain lowercase ASCII word keeps its letters, spaces becoming ``_`` (``"red car"`` ->
    ``red_car``); any other word (capitals, accents, ``/``, ``+``, ``#``, other scripts, an
    underscore of its own) is transliterated as far as ASCII allows and gets 8 hex digits of
    its sha256 (``"Café/Bar"`` -> ``cafe_bar_1a2b3c4d``, ``"猫"`` -> ``w_...``), so two words
    never share a slug and a word's slug never depends on the other words.
    """
    if _PLAIN_WORD.fullmatch(word) and len(word) <= 48:
        return word.replace(" ", "_")
    ascii_ = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "_", ascii_).strip("_")[:39] or "w"
    return f"{base}_{hashlib.sha256(word.encode('utf-8')).hexdigest()[:8]}"


def count_template(word: str) -> str:
    """Home Assistant's ``value_template`` of a word's count sensor: ``counts[word]`` of the
    state message, 0 when absent (the word as a JSON string literal, which Jinja reads
    escapes and all)."""
    return "{{ (value_json.counts or {}).get(" + json.dumps(word) + ", 0) }}"


def word_entities(
    words: tuple[str, ...] | list[str], prefix: str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """object id -> (component, config body) of each word's count sensor."""
    return {
        f"count_{word_slug(w)}": (
            "sensor",
            {
                "name": f"{w} count",
                "state_topic": f"{prefix}/state",
                "value_template": count_template(w),
                "state_class": "measurement",
                "icon": "mdi:counter",
            },
        )
        for w in words
    }


def discovery_messages(
    cfg: MqttConfig,
    prefix: str,
    version: str = "",
    events: bool = False,
    words: tuple[str, ...] | list[str] = (),
) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery topic -> config payload, for one device and its entities.

    Args:
        cfg: The ``[mqtt]`` section (``client_id``, ``discovery_prefix``, ``image``).
        prefix: The topic prefix of the service's own topics.
        version: Software version shown on the device page.
        events: Also the "Object" event entity (tracking with events on).
        words: The vocabulary (YOLOE): one count sensor per word.
    """
    node = node_id(cfg.client_id)
    device = {
        "identifiers": [node],
        "name": cfg.client_id,
        "manufacturer": "fastsam-edge",
        "model": "FastSAM segmentation service",
        "sw_version": version,
    }
    common = {
        "availability_topic": f"{prefix}/available",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": {"name": "fastsam-edge", "sw_version": version},
    }
    entities: dict[str, tuple[str, dict[str, Any]]] = {
        "masks": (
            "sensor",
            {
                "name": "Masks",
                "state_topic": f"{prefix}/state",
                "value_template": "{{ value_json.num_masks }}",
                "json_attributes_topic": f"{prefix}/state",
                "state_class": "measurement",
                "unit_of_measurement": "masks",
                "icon": "mdi:shape",
            },
        ),
        "capture": (
            "button",
            {
                "name": "Capture",
                "command_topic": f"{prefix}/trigger",
                "payload_press": "PRESS",
                "icon": "mdi:camera",
            },
        ),
    }
    if cfg.image:
        entities["last_result"] = ("camera", {"name": "Last result", "topic": f"{prefix}/overlay"})
    if events:
        # HA's MQTT event reads "event_type" from the JSON; the other keys become attributes
        entities["object"] = (
            "event",
            {
                "name": "Object",
                "state_topic": f"{prefix}/events",
                "event_types": ["enter", "leave"],
                "icon": "mdi:motion-sensor",
            },
        )
    entities.update(word_entities(words, prefix))
    out = {}
    for obj, (component, body) in entities.items():
        config = {
            **body,
            "unique_id": f"{node}_{obj}",
            "default_entity_id": f"{component}.{node}_{obj}",
            **common,
        }
        out[f"{cfg.discovery_prefix}/{component}/{node}/{obj}/config"] = config
    return out


class MqttPublisher:
    """Publishes results and receives capture requests; see the module docstring for topics.

    Args:
        cfg: The ``[mqtt]`` section.
        client_factory: Builds the paho client from the client id (tests pass a fake).
        metrics: Where ``fastsam_mqtt_connected`` and ``fastsam_errors_total{kind="mqtt"}`` go.
        now: Monotonic clock (the service passes its own, tests a fake one).
        on_trigger: Called (from paho's thread) when a capture request arrives.
        version: Software version for the discovery device.
        events: Announce the event entity (``processing.track`` with ``events.enabled``).
        state_dir: Where the announced word entities are remembered (``None``: nowhere; a
            word removed across a restart then keeps its entity).
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_factory: Callable[[str], Any] | None = None,
        metrics: Metrics | None = None,
        now: Callable[[], float] = time.monotonic,
        on_trigger: Callable[[], None] | None = None,
        version: str = "",
        events: bool = False,
        state_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.events = events
        self.words: tuple[str, ...] = ()
        self._entities = (
            StateFile(Path(state_dir) / ENTITIES_STATE, "Home Assistant word entities")
            if state_dir is not None
            else None
        )
        self._discovery_lock = threading.Lock()
        self.prefix = cfg.topic_prefix
        self.available_topic = f"{self.prefix}/available"
        self.results_topic = f"{self.prefix}/results"
        self.events_topic = f"{self.prefix}/events"
        self.state_topic = f"{self.prefix}/state"
        self.overlay_topic = f"{self.prefix}/overlay"
        self.trigger_topic = f"{self.prefix}/trigger"
        self._factory = client_factory or functools.partial(
            default_client_factory, protocol=cfg.protocol
        )
        self.metrics = metrics or Metrics()
        self._now = now
        self._on_trigger = on_trigger
        self._version = version
        self.client: Any = None
        self.connected = False
        self.last_error = ""
        self._down_since: float | None = None
        self._warned = False
        self._lock = threading.Lock()
        self._presses = 0
        self._pending: deque[list[tuple[str, Any, bool]]] = deque()
        self.dropped = 0
        self._dropped_in_outage = 0
        self._last_in: float | None = None
        self._errors_since_log = 0
        self._error_logged_at = -math.inf

    @property
    def broker(self) -> str:
        """``host:port`` of the broker."""
        return f"{self.cfg.host}:{self.cfg.port}"

    @property
    def grace_s(self) -> float:
        """How long a connection may take before it is reported: half the keep-alive."""
        return self.cfg.keepalive_s / 2

    @property
    def ping_s(self) -> int:
        """The keep-alive given to paho: it pings this often, half of ``keepalive_s``, so an
        answer is missed, and reported, within ``keepalive_s``."""
        return max(2, self.cfg.keepalive_s // 2)

    def start(self) -> None:
        """Create the client, set the last will, connect in the background.

        Raises:
            ConfigError: paho-mqtt missing or the password file unreadable.
        """
        c = self.cfg
        client = self._factory(c.client_id)
        client.will_set(self.available_topic, "offline", qos=1, retain=True)
        if c.username:
            password = None
            if c.password_file:
                password = read_secret_file("mqtt.password_file", c.password_file)
            client.username_pw_set(c.username, password)
        if c.tls:
            client.tls_set(ca_certs=c.ca_file or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_log = self._on_log
        if hasattr(client, "on_connect_fail"):
            client.on_connect_fail = self._on_connect_fail
        if hasattr(client, "max_queued_messages_set"):
            client.max_queued_messages_set(MAX_QUEUED)
        if hasattr(client, "reconnect_delay_set"):
            client.reconnect_delay_set(1, 60)
        self.client = client
        with self._lock:
            self._down_since = self._now()
            self._warned = False
        self.metrics.set("fastsam_mqtt_connected", 0)
        if int(getattr(client, "protocol", 0) or 0) == 5:
            client.connect_async(
                c.host,
                c.port,
                keepalive=self.ping_s,
                properties=connect_properties(c.max_packet_bytes),
            )
        else:
            client.connect_async(c.host, c.port, keepalive=self.ping_s)
        client.loop_start()
        _LOGGER.info(
            "mqtt: connecting to %s as %r (MQTT %s)", self.broker, c.client_id, c.protocol
        )

    # paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, *rest: Any) -> None:
        failed = getattr(reason, "is_failure", False) or (isinstance(reason, int) and reason != 0)
        if failed:
            self.last_error = f"connection refused: {reason}"
            self.metrics.inc("fastsam_errors_total", kind="mqtt")
            _LOGGER.error("mqtt: %s refused the connection: %s", self.broker, reason)
            return
        with self._lock:
            self.connected = True
            self._down_since = None
            self._warned = False
            if self._last_in is not None:
                self._last_in = self._now()
            pending, self._pending = list(self._pending), deque()
            dropped, self._dropped_in_outage = self._dropped_in_outage, 0
        self.metrics.set("fastsam_mqtt_connected", 1)
        _LOGGER.info(
            "mqtt: connected to %s%s",
            self.broker,
            f"; {len(pending)} result(s) sent now, {dropped} dropped while it was away"
            if pending or dropped
            else "",
        )
        client.publish(self.available_topic, "online", qos=1, retain=True)
        if hasattr(client, "subscribe"):
            client.subscribe(self.trigger_topic, qos=1)
        if self.cfg.discovery:
            self._publish_discovery(client)
        for items in pending:
            self._send(items)

    def _on_connect_fail(self, client: Any, userdata: Any, *rest: Any) -> None:
        self.last_error = "cannot connect (TCP)"

    def _on_disconnect(self, client: Any, userdata: Any, *rest: Any) -> None:
        reason = next((r for r in rest if r is not None and not isinstance(r, dict)), None)
        if reason is not None and getattr(reason, "is_failure", True):
            self.last_error = f"disconnected: {reason}"
        with self._lock:
            was, self.connected = self.connected, False
            if self._down_since is None:
                # the outage began when the broker last answered (a silent broker is only
                # noticed when paho's ping goes unanswered)
                now = self._now()
                self._down_since = min(now, self._last_in) if self._last_in is not None else now
        self.metrics.set("fastsam_mqtt_connected", 0)
        if was:  # the WARNING comes from poll() once the outage lasts (one per outage)
            _LOGGER.info("mqtt: disconnected from %s; reconnecting in the background", self.broker)

    def _on_log(self, client: Any, userdata: Any, level: Any, buf: str) -> None:
        # paho has no callback for PINGRESP: its debug log line says a packet came in
        if buf.startswith("Received "):
            now = self._now()
            with self._lock:
                self._last_in = now

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # a retained "press" left on the broker must not fire on every reconnect
        if msg.topic != self.trigger_topic or getattr(msg, "retain", False):
            return
        with self._lock:
            self._presses += 1
        _LOGGER.debug("mqtt: capture requested on %s", msg.topic)
        if self._on_trigger is not None:
            self._on_trigger()

    def _publish_discovery(self, client: Any) -> None:
        """Announce every entity, and remove the word entities announced before (remembered
        in the state directory) whose word left the vocabulary."""
        with self._discovery_lock:
            words = self.words
            messages = discovery_messages(self.cfg, self.prefix, self._version, self.events, words)
            for topic, config in messages.items():
                client.publish(topic, json.dumps(config), qos=1, retain=True)
            announced = sorted(
                discovery_messages(self.cfg, self.prefix, words=words).keys()
                - discovery_messages(self.cfg, self.prefix).keys()
            )
            saved = self._entities.load() if self._entities is not None else None
            before = saved.get("topics", []) if saved else []
            gone = sorted(
                {t for t in before if isinstance(t, str) and t.endswith("/config")}
                - set(announced)
            )
            for topic in gone:  # an empty retained config removes the entity
                client.publish(topic, "", qos=1, retain=True)
            if gone:
                _LOGGER.info("mqtt: removed %d word entit(y/ies): %s", len(gone), ", ".join(gone))
            if self._entities is not None and sorted(before) != announced:
                self._entities.save({"topics": announced})

    def set_vocabulary(self, words: tuple[str, ...] | list[str]) -> None:
        """The vocabulary changed: one count entity per word, added and removed now when
        connected with ``discovery`` (else on the next connection)."""
        self.words = tuple(words)
        client = self.client
        if client is not None and self.connected and self.cfg.discovery:
            self._publish_discovery(client)

    # service side -------------------------------------------------------------------------

    def take(self) -> int:
        """Capture requests received since the last call (one INFO line for all of them)."""
        with self._lock:
            n, self._presses = self._presses, 0
        if n:
            _LOGGER.info(
                "mqtt: %d capture request(s) on %s%s",
                n,
                self.trigger_topic,
                " (merged into one capture)" if n > 1 else "",
            )
        return n

    def silent_for(self) -> float | None:
        """Seconds since the connected broker last sent anything (None: not connected, or
        the client does not tell)."""
        with self._lock:
            if not self.connected or self._last_in is None:
                return None
            return max(0.0, self._now() - self._last_in)

    def down_for(self) -> float | None:
        """Seconds without a broker connection (None while connected or stopped)."""
        with self._lock:
            since = self._down_since
        if since is None or self.client is None:
            return None
        return max(0.0, self._now() - since)

    def problem(self) -> str | None:
        """A ``/healthz`` problem once the broker has not answered for :attr:`grace_s`, or,
        connected, has sent nothing (not even a ping's answer) for 3/4 of ``keepalive_s``
        (paho pings every half)."""
        silent = self.silent_for()
        if silent is not None and silent >= 0.75 * self.cfg.keepalive_s:
            return (
                f"mqtt: {self.broker} has not answered for {silent:.0f} s (connected, but no "
                "acknowledgement)"
            )
        down = self.down_for()
        if down is None or down < self.grace_s:
            return None
        why = f" ({self.last_error})" if self.last_error else ""
        return f"mqtt: no connection to {self.broker} for {down:.0f} s{why}"

    def poll(self) -> None:
        """Warn (once per outage) when the broker has not answered for :attr:`grace_s`."""
        problem = self.problem()
        if problem is None:
            return
        with self._lock:
            if self._warned:
                return
            self._warned = True
        self.metrics.inc("fastsam_errors_total", kind="mqtt")
        _LOGGER.warning(
            "%s; results are not published until it answers (check mqtt.host / mqtt.port and "
            "that the broker runs)",
            problem,
        )

    def publish_event(self, event: dict[str, Any]) -> None:
        """Publish one enter / leave event on ``<prefix>/events`` (not retained); it waits
        and is dropped like a result while the broker is away."""
        self._publish([(self.events_topic, json.dumps(event, separators=(",", ":")), False)])

    def publish(self, message: dict[str, Any], image_jpeg: bytes | None = None) -> None:
        """Publish one result (results + retained state, and the overlay JPEG if given).

        While the broker is away the result waits (at most :data:`MAX_PENDING`, newest kept,
        drops counted in ``fastsam_mqtt_dropped_total``). Errors are counted and logged at
        most once a minute, never raised.
        """
        payload = json.dumps(message, separators=(",", ":"))
        items: list[tuple[str, Any, bool]] = [
            (self.results_topic, payload, False),
            (self.state_topic, payload, True),
        ]
        if image_jpeg is not None:
            items.append((self.overlay_topic, image_jpeg, True))
        self._publish(items)

    def _publish(self, items: list[tuple[str, Any, bool]]) -> None:
        if self.client is None:
            return
        with self._lock:
            if not self.connected:
                self._pending.append(items)
                dropped = 0
                while len(self._pending) > MAX_PENDING:
                    self._pending.popleft()
                    dropped += 1
                self._dropped_in_outage += dropped
            else:
                dropped = -1
        if dropped > 0:
            self._count_dropped(dropped)
        if dropped < 0:
            self._send(items)

    def _count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n
        self.metrics.inc("fastsam_mqtt_dropped_total", n)

    def _send(self, items: list[tuple[str, Any, bool]]) -> None:
        client = self.client
        if client is None:
            return
        try:
            for topic, body, retain in items:
                info = client.publish(topic, body, qos=self.cfg.qos, retain=retain)
                rc = getattr(info, "rc", 0)
                if rc == QUEUE_FULL:  # connected, but the broker does not keep up
                    self._count_dropped(1)
                    raise RuntimeError(f"paho's queue of {MAX_QUEUED} is full; dropped {topic}")
                if rc not in (0, None, NO_CONNECTION):
                    raise RuntimeError(f"publish to {topic} returned rc={rc}")
        except Exception as exc:  # never let the broker stop the service
            self.metrics.inc("fastsam_errors_total", kind="mqtt")
            self._log_error(str(exc))

    def _log_error(self, what: str) -> None:
        """A WARNING at most once per :data:`ERROR_LOG_INTERVAL_S`, with the count."""
        now = self._now()
        with self._lock:
            self._errors_since_log += 1
            if now - self._error_logged_at < ERROR_LOG_INTERVAL_S:
                return
            n, self._errors_since_log = self._errors_since_log, 0
            self._error_logged_at = now
        _LOGGER.warning(
            "mqtt: publish failed (%d time(s) since the last such warning): %s", n, what
        )

    def stop(self) -> None:
        """Announce ``offline``, disconnect, stop the network thread."""
        client, self.client = self.client, None
        if client is None:
            return
        with self._lock:
            was_connected, self.connected = self.connected, False  # no "disconnected" warning
            self._down_since = None
        try:
            info = client.publish(self.available_topic, "offline", qos=1, retain=True)
            if was_connected and hasattr(info, "wait_for_publish"):
                info.wait_for_publish(timeout=2.0)
            client.disconnect()
        except Exception as exc:
            _LOGGER.debug("mqtt: disconnect failed: %r", exc)
        finally:
            client.loop_stop()
