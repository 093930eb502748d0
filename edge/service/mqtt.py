"""Optional MQTT publishing with paho-mqtt 2.x (imported only when ``[mqtt] enabled``).

Topics, the way Home Assistant and Frigate users expect them:

* ``<prefix>/available``: ``online`` / ``offline``, retained; ``offline`` is also the last will,
  so the broker announces a crashed service.
* ``<prefix>/events``: one compact JSON message per result (not retained).
* ``<prefix>/state``: the same message, retained (the last result).
* with ``discovery = true``: ``<discovery_prefix>/sensor/<client_id>/masks/config``, a retained
  Home Assistant discovery message for a "masks" sensor reading ``<prefix>/state``.

The client connects asynchronously and reconnects by itself; a broker that is down never
blocks or stops the service (messages queue up to a bound, then are dropped by paho).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.service.config import ConfigError, MqttConfig
from edge.service.metrics import Metrics

_LOGGER = logging.getLogger(__name__)

MAX_QUEUED = 100


def default_client_factory(client_id: str) -> Any:
    """A paho-mqtt 2.x client (callback API version 2).

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
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)


def compact_message(
    doc: dict[str, Any],
    max_masks: int,
    files: dict[str, str] | None,
    result_dir: str | None,
    latency_ms: float,
) -> dict[str, Any]:
    """The event message: ids, time, trigger, counts, top masks, file paths."""
    masks = [
        {"id": m["id"], "score": m["score"], "bbox_xyxy": m["bbox_xyxy"], "area": m["area"]}
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
    if result_dir is not None and files:
        msg["result_dir"] = result_dir
        msg["files"] = {k: str(Path(result_dir) / v) for k, v in files.items()}
    return msg


class MqttPublisher:
    """Publishes results; see the module docstring for topics."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_factory: Callable[[str], Any] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.prefix = cfg.topic_prefix
        self.available_topic = f"{self.prefix}/available"
        self.events_topic = f"{self.prefix}/events"
        self.state_topic = f"{self.prefix}/state"
        self._factory = client_factory or default_client_factory
        self.metrics = metrics or Metrics()
        self.client: Any = None
        self.connected = False

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
                try:
                    password = Path(c.password_file).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(
                        f"mqtt.password_file: cannot read {c.password_file!r}: {exc.strerror}"
                    ) from None
            client.username_pw_set(c.username, password)
        if c.tls:
            client.tls_set(ca_certs=c.ca_file or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if hasattr(client, "max_queued_messages_set"):
            client.max_queued_messages_set(MAX_QUEUED)
        if hasattr(client, "reconnect_delay_set"):
            client.reconnect_delay_set(1, 60)
        self.client = client
        client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        client.loop_start()
        _LOGGER.info("mqtt: connecting to %s:%d as %r", c.host, c.port, c.client_id)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, *rest: Any) -> None:
        failed = getattr(reason, "is_failure", False) or (isinstance(reason, int) and reason != 0)
        if failed:
            self.metrics.inc("fastsam_errors_total", kind="mqtt")
            _LOGGER.error("mqtt: connection refused: %s", reason)
            return
        self.connected = True
        _LOGGER.info("mqtt: connected to %s:%d", self.cfg.host, self.cfg.port)
        client.publish(self.available_topic, "online", qos=1, retain=True)
        if self.cfg.discovery:
            self._publish_discovery(client)

    def _on_disconnect(self, client: Any, userdata: Any, *rest: Any) -> None:
        if self.connected:
            _LOGGER.warning("mqtt: disconnected; reconnecting in the background")
        self.connected = False

    def _publish_discovery(self, client: Any) -> None:
        c = self.cfg
        uid = f"{c.client_id}_masks"
        config = {
            "name": "Masks",
            "unique_id": uid,
            "object_id": uid,
            "state_topic": self.state_topic,
            "value_template": "{{ value_json.num_masks }}",
            "json_attributes_topic": self.state_topic,
            "availability_topic": self.available_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "state_class": "measurement",
            "icon": "mdi:shape",
            "device": {
                "identifiers": [c.client_id],
                "name": c.client_id,
                "manufacturer": "fastsam-edge",
                "model": "FastSAM on the edge",
            },
        }
        topic = f"{c.discovery_prefix}/sensor/{c.client_id}/masks/config"
        client.publish(topic, json.dumps(config), qos=1, retain=True)

    def publish(self, message: dict[str, Any]) -> None:
        """Publish one result message (events + retained state); errors are logged, counted."""
        if self.client is None:
            return
        payload = json.dumps(message, separators=(",", ":"))
        try:
            for topic, retain in ((self.events_topic, False), (self.state_topic, True)):
                info = self.client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
                rc = getattr(info, "rc", 0)
                if rc not in (0, None) and rc != 4:  # 4 = MQTT_ERR_NO_CONN: queued by paho
                    raise RuntimeError(f"publish to {topic} returned rc={rc}")
        except Exception as exc:  # never let the broker stop the service
            self.metrics.inc("fastsam_errors_total", kind="mqtt")
            _LOGGER.error("mqtt: publish failed: %s", exc)

    def stop(self) -> None:
        """Announce ``offline``, disconnect, stop the network thread."""
        client, self.client = self.client, None
        if client is None:
            return
        was_connected, self.connected = self.connected, False  # no "disconnected" warning
        try:
            info = client.publish(self.available_topic, "offline", qos=1, retain=True)
            if was_connected and hasattr(info, "wait_for_publish"):
                info.wait_for_publish(timeout=2.0)
            client.disconnect()
        except Exception as exc:
            _LOGGER.debug("mqtt: disconnect failed: %r", exc)
        finally:
            client.loop_stop()
