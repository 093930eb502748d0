"""A local MJPEG camera and the stream-latency bench (``bench --track-sequence --stream-fps``).

:class:`MjpegCamera` serves ``multipart/x-mixed-replace`` JPEG frames over HTTP on 127.0.0.1
(what cheap IP cameras and ``ffmpeg -f mpjpeg`` send). Every frame carries its number as a row
of black and white blocks along its top edge (:func:`stamp_number` / :func:`read_number`,
robust to JPEG), and the camera notes when it sent each number. It can require HTTP Basic
credentials, drop every connection after some frames (a camera that goes away mid-stream) and
refuse connections while :attr:`MjpegCamera.down` is set; the stream tests use it too.

:func:`run_stream_latency` runs the real service (``source.kind = "stream"``, every frame the
source delivers at ``source.fps``) against such a camera and measures, for each result, the
time from the camera sending the frame to the service's result for it: capture, network,
decoding, the reader thread's hand-over, queueing, segmentation and output.
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

BITS = 16
CELL = 16


def stamp_number(image: NDArray[np.uint8], n: int) -> NDArray[np.uint8]:
    """Write ``n`` (< 2**16) as blocks along the top edge of a (H >= 16, W >= 256) image."""
    for bit in range(BITS):
        image[0:CELL, bit * CELL : (bit + 1) * CELL] = 255 if (n >> bit) & 1 else 0
    return image


def read_number(image: NDArray[np.uint8]) -> int:
    """The number :func:`stamp_number` wrote."""
    n = 0
    for bit in range(BITS):
        block = image[CELL // 4 : 3 * CELL // 4, bit * CELL + 4 : (bit + 1) * CELL - 4]
        if block.mean() > 128:
            n |= 1 << bit
    return n


def numbered_frames(width: int = 320, height: int = 240) -> Callable[[int], NDArray[np.uint8]]:
    """Frame ``n``: a moving-objects scene (:func:`edge.demo.scenes.generate_sequence`,
    looping over 60 frames) stamped with ``n``."""
    from edge.demo.scenes import generate_sequence

    scenes = [f.image for f in generate_sequence(1_000_000, 60, width, height)]
    return lambda n: stamp_number(scenes[n % len(scenes)].copy(), n)


class MjpegCamera:
    """Serves ``/stream.mjpg`` at ``fps`` frames a second; see the module docstring.

    Args:
        fps: Frames a second per connection.
        credentials: ``"user:password"`` the client must send (HTTP Basic); "" for none.
        drop_after: Close each connection after this many frames (None: never).
        frame: Frame ``n`` (default: :func:`numbered_frames` at 320x240).

    Attributes:
        sent: Frames sent so far over all connections (the next frame's number).
        sent_at: ``time.monotonic()`` at which each frame number was sent.
        connections: Connections that got a stream.
        down: While set, new connections are closed at once and streams stop.
    """

    def __init__(
        self,
        fps: float = 30.0,
        credentials: str = "",
        drop_after: int | None = None,
        frame: Callable[[int], NDArray[np.uint8]] | None = None,
    ) -> None:
        self.fps = fps
        self.credentials = credentials
        self.drop_after = drop_after
        self.frame = frame or numbered_frames()
        self.down = threading.Event()
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self.connections = 0
        self._lock = threading.Lock()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                camera._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/stream.mjpg"

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        if self.down.is_set():
            h.close_connection = True
            return
        if self.credentials:
            want = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if h.headers.get("Authorization") != want:
                h.send_response(401)
                h.send_header("WWW-Authenticate", 'Basic realm="camera"')
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        with self._lock:
            self.connections += 1
        h.send_response(200)
        h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        count = 0
        next_at = time.monotonic()
        try:
            while not self.down.is_set():
                if self.drop_after is not None and count >= self.drop_after:
                    return
                with self._lock:
                    n = self.sent
                    self.sent += 1
                ok, jpeg = cv2.imencode(".jpg", self.frame(n), [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    return
                data = jpeg.tobytes()
                self.sent_at[n] = time.monotonic()
                h.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                    + b"\r\n"
                )
                h.wfile.flush()
                count += 1
                next_at += 1.0 / self.fps
                time.sleep(max(0.0, next_at - time.monotonic()))
        except OSError:  # the client went away
            return

    def __enter__(self) -> MjpegCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class _Stamped:
    """A segmenter that notes the number stamped on each frame it segments (in order)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.numbers: deque[int] = deque()
        self.seg_s: list[float] = []
        self.manifest = getattr(inner, "manifest", None)
        self.precision = getattr(inner, "precision", None)

    def segment(self, image: NDArray[np.uint8], **kw: Any) -> Any:
        self.numbers.append(read_number(image))
        t0 = time.perf_counter()
        try:
            return self.inner.segment(image, **kw)
        finally:
            self.seg_s.append(time.perf_counter() - t0)


def run_stream_latency(
    bundle: str,
    fps_list: list[float],
    seconds: float,
    camera_fps: float = 25.0,
    precision: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """End-to-end latency of a stream through the service at each rate of ``fps_list``.

    Args:
        bundle: Bundle directory.
        fps_list: ``source.fps`` values (every frame the source delivers is segmented).
        seconds: Run length per rate.
        camera_fps: The camera's own frame rate.
        precision: Detector precision (None: the bundle's).
        threads: onnxruntime threads (None: the default).

    Returns:
        ``{"camera_fps", "rows": [{"fps", "results", "p50_ms", "p90_ms", "max_ms",
        "segment_ms"}]}``.
    """
    from edge.segmenter import Segmenter
    from edge.service.config import demo_config
    from edge.service.runner import Service

    inner = Segmenter.load(bundle, precision=precision, threads=threads)
    inner.segment(numbered_frames()(0))  # warm-up here: the wrapper counts only results
    rows = []
    for fps in fps_list:
        seg = _Stamped(inner)
        latencies: list[float] = []
        with MjpegCamera(camera_fps) as camera, tempfile.TemporaryDirectory() as out:

            def on_result(
                _doc: dict[str, Any],
                seg: _Stamped = seg,
                cam: MjpegCamera = camera,
                out: list[float] = latencies,
            ) -> None:
                n = seg.numbers.popleft()
                out.append(time.monotonic() - cam.sent_at[n])

            cfg = demo_config(
                out,
                **{
                    "source.kind": "stream",
                    "source.url": camera.url,
                    "source.fps": fps,
                    "processing.track": True,
                    "model.warmup": False,
                },
            )
            Service(cfg, segmenter=seg, duration_s=seconds, on_result=on_result).run(
                install_signals=False
            )
        lat = sorted(latencies)
        rows.append(
            {
                "fps": fps,
                "results": len(lat),
                "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
                "p90_ms": 1e3 * lat[int(0.9 * (len(lat) - 1))] if lat else float("nan"),
                "max_ms": 1e3 * lat[-1] if lat else float("nan"),
                "segment_ms": 1e3 * statistics.mean(seg.seg_s[1:] or seg.seg_s),
            }
        )
    return {"camera_fps": camera_fps, "seconds": seconds, "rows": rows}
