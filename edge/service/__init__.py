"""The camera service: ``fastsam-edge serve`` and its helpers.

Modules (each imports only the standard library, numpy, OpenCV and ``edge``; paho-mqtt,
gpiozero and picamera2 are imported lazily, only when configured):

* ``config``: the TOML schema (every key, its default and its documentation) and validation.
* ``sources``: frame sources (picamera2, OpenCV/V4L2, image-folder/video replay, demo scenes),
  orientation/ROI/resolution-cap transforms, and reopening a failed source with backoff.
* ``triggers``: interval, motion (int16 frame differencing), GPIO edge, and the bounded job
  queue that drops (and counts) frames while segmentation is busy.
* ``sink``: atomic per-result directories under the output dir, with retention.
* ``http``: the local HTTP API (``POST /trigger``, ``GET /healthz``, ``/metrics``, ``/latest``)
  over TCP and/or a Unix socket.
* ``web``: the browser page (``static/``) and the endpoints it polls.
* ``live``: the live frame for the page, and the frames kept for prompts.
* ``telemetry``: counters, gauges and a latency histogram in the Prometheus text format.
* ``clock``: injectable time (tests run on a fake clock).
* ``protocols``: what the service needs from a segmenter, as typed protocols.
* ``notify``: ``sd_notify`` (READY / WATCHDOG / STATUS / STOPPING) written by hand.
* ``mqtt``: optional MQTT publishing (availability/last will, events, overlay JPEG, a capture
  trigger topic, Home Assistant discovery) and broker-outage reporting.
* ``runner``: the service itself (frame loop, worker, signals, summary).
* ``install`` / ``doctor`` / ``configure``: ``fastsam-edge install-service`` (unit with a
  bundle-derived ``MemoryMax=``), ``fastsam-edge doctor`` and the first-run config.
* ``cli``: the service subcommands of ``fastsam-edge`` (``serve``, ``doctor``,
  ``install-service``, ``configure``).
"""

from __future__ import annotations

from edge.service.config import ConfigError, ServiceConfig, load_config

__all__ = ["ConfigError", "ServiceConfig", "load_config"]
