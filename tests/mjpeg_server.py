"""A real MJPEG-over-HTTP camera on 127.0.0.1 for the stream tests (multipart/x-mixed-replace).

Each frame carries its number as big black/white blocks (:func:`frame_number` reads it back
through JPEG), so a test can tell which frame a reader delivered. The server can require
HTTP Basic credentials, drop every connection after ``drop_after`` frames (a camera that
goes away mid-stream), and refuse connections while :attr:`MjpegServer.down` is set.
"""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BITS = 12
CELL = 16
WIDTH, HEIGHT = 320, 240


def numbered_frame(n: int) -> np.ndarray:
    """A (240, 320, 3) BGR frame whose top row of blocks spells ``n`` in binary."""
    img = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for bit in range(BITS):
        on = (n >> bit) & 1
        img[0:CELL, bit * CELL : (bit + 1) * CELL] = 255 if on else 0
    cv2.circle(img, (40 + (n * 7) % 240, 150), 20, (40, 30, 215), -1)
    return img


def frame_number(img: np.ndarray) -> int:
    """The number :func:`numbered_frame` wrote (robust to JPEG)."""
    n = 0
    for bit in range(BITS):
        if img[CELL // 4 : 3 * CELL // 4, bit * CELL + 4 : (bit + 1) * CELL - 4].mean() > 128:
            n |= 1 << bit
    return n


class MjpegServer:
    """Serves ``/stream.mjpg`` at ``fps`` frames a second; see the module docstring.

    Attributes:
        sent: Frames sent so far (over all connections); the next frame's number.
        sent_at: Monotonic time each frame number was sent.
        down: While set, new connections are closed at once.
        drop_after: Close each connection after this many frames (None: never).
    """

    def __init__(
        self, fps: float = 30.0, credentials: str = "", drop_after: int | None = None
    ) -> None:
        self.fps = fps
        self.credentials = credentials
        self.drop_after = drop_after
        self.down = threading.Event()
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self.connections = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if server.down.is_set():
                    self.close_connection = True
                    self.connection.close()
                    return
                if server.credentials:
                    want = "Basic " + base64.b64encode(server.credentials.encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                with server.lock:
                    server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                count = 0
                try:
                    while not server.down.is_set():
                        if server.drop_after is not None and count >= server.drop_after:
                            return
                        with server.lock:
                            n = server.sent
                            server.sent += 1
                        ok, jpeg = cv2.imencode(".jpg", numbered_frame(n))
                        assert ok
                        data = jpeg.tobytes()
                        server.sent_at[n] = time.monotonic()
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(data)}\r\n\r\n".encode()
                            + data
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        count += 1
                        time.sleep(1.0 / server.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"

    def __enter__(self) -> MjpegServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down.set()
        self.httpd.shutdown()
        self.httpd.server_close()
