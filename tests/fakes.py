"""Fakes for testing the service without a camera, a broker or systemd (test suite only).

A segmenter, frame sources, an MQTT client, a systemd notify socket and a result reader that
stand in for the real ones in :class:`~edge.service.runner.Service`; and a tiny open-vocabulary
(YOLOE) segmenter: a seeded head, a detector session stand-in and a text tower stand-in around
the real :class:`~edge.segmenter.Segmenter` (no trained YOLOE bundle needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.bundle import YoloeSection, read_manifest
from edge.segmenter import Segmenter
from edge.service.sink import PARTIAL_PREFIX, RESULT_NAME
from edge.service.sources import FrameSource, SourceError
from edge.sources import Frame
from edge.types import MaskCrop, Masks
from edge.yoloe import YoloeHead, l2_normalize, scale_sizes


class FakeSegmenter:
    """Returns one box-shaped mask per call; can block (``gate``) to simulate a hung model.

    Attributes:
        calls: Number of ``segment`` calls.
        entered: Set when a call starts (tests wait on it).
        gate: While cleared, calls block until it is set.
        prompts: The ``prompt`` argument of each call.
    """

    def __init__(self, block: bool = False) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not block:
            self.gate.set()
        self.prompts: list[Any] = []

    def segment(
        self,
        image: NDArray[np.uint8],
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        prompt: Any = None,
    ) -> Masks:
        self.calls += 1
        self.prompts.append(prompt)
        self.entered.set()
        self.gate.wait()
        h, w = image.shape[:2]
        y0, x0, y1, x1 = h // 4, w // 4, h // 2, w // 2
        data = np.ones((y1 - y0, x1 - x0), dtype=bool)
        return Masks(
            xyxy=np.array([[x0, y0, x1, y1]], dtype=np.float32),
            confidence=np.array([0.9], dtype=np.float32),
            crops=(MaskCrop(data, x0, y0),),
            image_hw=(h, w),
            timings={"preprocess": 0.0, "infer": 0.0, "postprocess": 0.0},
        )


@dataclass
class FlakySource:
    """Wraps a source; its first ``open_failures`` opens and the reads listed in
    ``read_failures`` (1-based read numbers) raise :class:`SourceError`."""

    inner: FrameSource
    open_failures: int = 0
    read_failures: tuple[int, ...] = ()
    clock: Any = None
    open_times: list[float] = field(default_factory=list)
    reads: int = 0

    @property
    def name(self) -> str:
        return f"flaky:{self.inner.name}"

    @property
    def live(self) -> bool:
        return self.inner.live

    def open(self) -> None:
        if self.clock is not None:
            self.open_times.append(self.clock.now())
        if self.open_failures > 0:
            self.open_failures -= 1
            raise SourceError("camera busy (injected)")
        self.inner.open()

    def read(self) -> Frame | None:
        self.reads += 1
        if self.reads in self.read_failures:
            raise SourceError("camera disconnected (injected)")
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


class ListSource:
    """Frames from a list of images (BGR); optionally live."""

    def __init__(
        self, images: list[NDArray[np.uint8]], live: bool = False, loop: bool = False
    ) -> None:
        self.images = images
        self.live = live
        self.loop = loop
        self.name = f"list:{len(images)}"
        self._pos = 0

    def open(self) -> None:
        self._pos = 0

    def read(self) -> Frame | None:
        if self._pos >= len(self.images):
            if not self.loop:
                return None
            self._pos = 0
        image = self.images[self._pos]
        self._pos += 1
        return Frame(image.copy(), f"frame{self._pos:04d}")

    def close(self) -> None:
        pass


class FakeMqttClient:
    """Records what the publisher does with a paho client; ``connect()`` fires on_connect."""

    def __init__(self, client_id: str = "fake") -> None:
        self.client_id = client_id
        self.will: tuple[Any, ...] | None = None
        self.published: list[tuple[str, str, int, bool]] = []
        self.connected_to: tuple[str, int] | None = None
        self.loop_running = False
        self.disconnected = False
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None
        self.auth: tuple[str, str | None] | None = None
        self.subscribed: list[str] = []

    def will_set(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        self.will = (topic, payload, qos, retain)

    def username_pw_set(self, user: str, password: str | None) -> None:
        self.auth = (user, password)

    def connect_async(self, host: str, port: int, keepalive: int = 60) -> None:
        self.connected_to = (host, port)

    def loop_start(self) -> None:
        self.loop_running = True

    def loop_stop(self) -> None:
        self.loop_running = False

    def connect(self) -> None:
        """Simulate the broker accepting the connection."""
        self.on_connect(self, None, {}, 0, None)

    def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False) -> Any:
        self.published.append((topic, payload, qos, retain))
        return _Info()

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscribed.append(topic)

    def deliver(self, topic: str, payload: bytes = b"PRESS", retain: bool = False) -> None:
        """Simulate the broker delivering a message on a subscribed topic."""
        self.on_message(self, None, SimpleNamespace(topic=topic, payload=payload, retain=retain))

    def disconnect(self) -> None:
        self.disconnected = True

    def topics(self) -> list[str]:
        return [p[0] for p in self.published]


class _Info:
    rc = 0

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, directory: str | Path) -> None:
        self.path = str(Path(directory) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
            env["WATCHDOG_PID"] = str(os.getpid())
        return env

    def drain(self) -> list[str]:
        """Receive every pending datagram; returns the new ones."""
        new = []
        while True:
            try:
                new.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.messages += new
        return new

    def count(self, field: str) -> int:
        self.drain()
        return sum(field in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


SERVICE_WAIT_S = 60.0  # generous: a loaded 2-core CI machine


def start_service(svc: Any) -> Any:
    """Run a :class:`~edge.service.runner.Service` in a daemon thread (no signal handlers) and
    wait until it is ready; :func:`stop_service` ends it."""
    svc._thread = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    svc._thread.start()
    assert svc.ready.wait(SERVICE_WAIT_S)
    return svc


def stop_service(svc: Any) -> None:
    """Stop a service started by :func:`start_service` and check its thread ended."""
    svc.request_stop("test")
    svc._thread.join(SERVICE_WAIT_S)
    assert not svc._thread.is_alive()


def assert_only_complete(out: str | Path) -> None:
    """Every visible entry is a complete result directory; nothing half-written anywhere."""
    import cv2

    for p in Path(out).iterdir():
        assert not p.name.startswith(PARTIAL_PREFIX), f"partial result left: {p.name}"
        assert RESULT_NAME.match(p.name), p.name
        doc = json.loads((p / "result.json").read_text())
        for key, name in doc["files"].items():
            f = p / name
            assert f.is_file(), f"{p.name}: {key} {name} missing"
            if name.endswith((".png", ".jpg")):
                assert cv2.imread(str(f)) is not None, f"{f} is not a complete image"
        assert not [q for q in p.iterdir() if q.name.endswith(".tmp")], p.name


# ------------------------------------------------------------------------------------------
# a tiny open-vocabulary (YOLOE) segmenter
# ------------------------------------------------------------------------------------------

D, H, S = 16, 32, 3
"""Embedding size, text-adapter hidden size and scales of the fake YOLOE head."""


def make_head(seed: int = 0, d: int = D) -> YoloeHead:
    """A seeded YOLOE text head (adapter + folded contrastive head) of embedding size ``d``."""
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return YoloeHead(
        w12=r(2 * H, d, scale=0.3), b12=r(2 * H, scale=0.1), w3=r(d, H, scale=0.3),
        b3=r(d, scale=0.1), bn_scale=np.abs(r(S, d)) + 0.5, bn_shift=r(S, d, scale=0.2),
        logit_scale=r(S, scale=0.3), bias=r(S) - 2,
    )  # fmt: skip


class FakeYoloeSession:
    """Detector stand-in: 3 outputs sized for the input; anchor 0 of each scale is an object."""

    def __init__(self, head: YoloeHead, direction: np.ndarray, nm: int = 32) -> None:
        self.head, self.direction, self.nm = head, direction, nm

    def run(self, _names: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (tensor,) = feeds.values()
        h, w = tensor.shape[2:]
        sizes = scale_sizes((h, w), (8, 16, 32))
        n = sum(sizes)
        boxes = np.tile(np.array([[w / 2], [h / 2], [w / 4], [h / 4]], np.float32), (1, n))
        coef = np.zeros((self.nm, n), np.float32)
        coef[0] = 1.0
        emb = np.zeros((1, D, n), np.float32)
        emb[0, :, 0] = self.direction * 50  # one strong anchor, aligned with the direction
        protos = np.ones((1, self.nm, h // 4, w // 4), np.float32)
        return [np.concatenate([boxes, coef])[None], emb, protos]


def word_embedding(word: str, d: int = D) -> np.ndarray:
    """A fixed unit (d,) embedding per word (seeded by its sha256)."""
    seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    return l2_normalize(np.random.default_rng(seed).standard_normal(d).astype(np.float32))


class FakeTextTower:
    """Text tower stand-in: :func:`word_embedding` per word; records each call's words.

    Attributes:
        calls: The words of each ``encode`` call.
        gate: While cleared, calls block (a slow tower); set by default.
        fail: Raise this from ``encode`` when set.
    """

    def __init__(self, d: int = D) -> None:
        self.d = d
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: Exception | None = None

    def encode(self, words: list[str]) -> np.ndarray:
        self.calls.append(list(words))
        self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return np.stack([word_embedding(w, self.d) for w in words]).astype(np.float32)


def yoloe_segmenter(
    bundle_dir: Path,
    default: tuple[str, ...] = ("dog", "cat"),
    tower: FakeTextTower | None = None,
) -> Segmenter:
    """A real :class:`~edge.segmenter.Segmenter` with a fake YOLOE head, detector and text
    tower (``tower`` given: new words are encoded by it; ``None``: no text tower). Its default
    vocabulary is ``default`` (``()``: none); the detector's one object looks most like the
    first default word (or "dog")."""
    head = make_head()
    words = default or ("dog",)
    raw = np.stack([word_embedding(w) for w in words])
    weights, _ = head.class_weights(head.adapt(raw))
    direction = weights[0][:, 0] - (weights[0][:, 1] if len(words) > 1 else 0)
    m = read_manifest(bundle_dir)
    fake = FakeYoloeSession(head, direction / np.linalg.norm(direction))
    section = YoloeSection.from_json(
        {"family": "11", "end2end": False, "box_format": "xywh", "embed_dim": D,
         "strides": [8, 16, 32], "head": "yoloe_head.npz", "vocabulary": {}}
    )  # fmt: skip
    seg = Segmenter(bundle_dir, m, "fp32", 1, fake, yoloe=section)  # type: ignore[arg-type]
    seg._head = head
    seg._tower = tower  # type: ignore[assignment]
    if default:
        seg.set_vocabulary(list(default), raw)
    return seg
