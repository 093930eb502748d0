"""The camera service: ``fastsam-edge serve`` and its helpers.

Modules (each imports only the standard library, numpy, OpenCV and ``edge``; paho-mqtt,
gpiozero and picamera2 are imported lazily, only when configured):

* ``config``: the TOML schema (every key, its default and its documentation) and validation.
* ``sources``: frame sources (picamera2, OpenCV/V4L2, network streams read on their own
  thread, image-folder/video replay, demo scenes),
  orientation/ROI/resolution-cap transforms, and reopening a failed source with backoff.
* ``triggers``: interval, motion (int16 frame differencing) and GPIO edges.
* ``queues``: the two bounded queues (triggered frames to the worker, segmented frames to the
  output stage), what travels on them, and the HTTP trigger's waiting slot.
* ``frames``: the frame loop's stage: read a frame when a trigger needs one, fire, queue it.
* ``worker``: the segmentation worker: jobs segmented through the prompt cache.
* ``output``: the output stage: each result encoded, drawn, written, published and answered.
* ``events``: tracking of the segmented sequence (``processing.track``) and its enter / leave
  events (their JSON, thumbnails and the page's recent list).
* ``sink``: atomic per-result directories under the output dir, with retention.
* ``http``: the local HTTP API (``POST /trigger``, ``GET /healthz``, ``/metrics``, ``/latest``)
  over TCP and/or a Unix socket.
* ``web``: the browser page (``static/``) and the endpoints it polls.
* ``live``: the live frame for the page, and the frames kept for prompts.
* ``vocabulary``: the open vocabulary of a YOLOE bundle: where it comes from (saved,
  configured, the bundle's), ``GET`` / ``POST /vocabulary``, encoding off the HTTP thread and
  the hand-over to the worker between frames.
* ``state``: small JSON files in the state directory (``service.state_dir``), written
  atomically, a corrupt one logged and ignored.
* ``status``: what a running service reports (``/healthz``, the page's ``/state``, caches).
* ``telemetry``: counters, gauges and a latency histogram in the Prometheus text format.
* ``clock``: injectable time (tests run on a fake clock).
* ``protocols``: what the service needs from a segmenter, as typed protocols.
* ``notify``: ``sd_notify`` (READY / WATCHDOG / STATUS / STOPPING) written by hand.
* ``mqtt``: optional MQTT publishing (availability/last will, results, enter / leave events,
  overlay JPEG, a capture
  trigger topic, Home Assistant discovery with a count sensor per vocabulary word) and
  broker-outage reporting.
* ``runner``: the service itself: the stages assembled, the worker, lifecycle, signals, the
  summary, and what HTTP and the page ask of it.
* ``install`` / ``doctor`` / ``configure``: ``fastsam-edge install-service`` (unit with a
  bundle-derived ``MemoryMax=``), ``fastsam-edge doctor`` and the first-run config.
* ``cli``: the service subcommands of ``fastsam-edge`` (``serve``, ``doctor``,
  ``install-service``, ``configure``).
"""

from __future__ import annotations

from edge.service.config import ConfigError, ServiceConfig, load_config

__all__ = ["ConfigError", "ServiceConfig", "load_config"]
