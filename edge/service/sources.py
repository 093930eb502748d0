"""Frame sources behind one small interface, and the per-frame transforms.

Every source delivers (H, W, 3) uint8 **BGR** frames:

* :class:`PiCameraSource`: picamera2 (apt ``python3-picamera2``), imported in ``open()`` only.
  It asks for ``RGB888``, which libcamera lays out as B, G, R in memory: OpenCV's order.
* :class:`OpenCVSource`: USB/V4L2 cameras through ``cv2.VideoCapture`` (not the Pi CSI camera,
  which OpenCV cannot read on the libcamera stack).
* :class:`StreamSource`: a network camera (RTSP, MJPEG over HTTP, an HTTP(S) file or HLS
  playlist: whatever OpenCV's FFmpeg backend opens), read on its own thread that keeps only the
  newest frame, so a slow segmenter never makes the stream's latency grow.
* :class:`ReplaySource`: a folder of images or a video file (offline runs, tests).
* :class:`DemoSource`: seeded synthetic scenes (:mod:`edge.demo.scenes`).

:class:`ResilientSource` wraps any of them: a failed open or read (camera unplugged, busy,
timed out) closes the source and reopens it later with exponential backoff, so the service
never dies of a camera problem. :class:`FrameTransform` applies orientation, the region of
interest and the stored-mask resolution cap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.io import IMAGE_EXTS, MAX_IMAGE_PIXELS, read_image
from edge.paths import describe_path_kind
from edge.preprocess import normalize_image
from edge.service.clock import Clock
from edge.service.config import (
    ConfigError,
    ServiceConfig,
    SourceConfig,
    read_secret_file,
    redact_url,
)
from edge.sources import Frame

_LOGGER = logging.getLogger(__name__)


class SourceError(OSError):
    """A source failed to open or to deliver a frame (it will be reopened)."""


class SourceUnusable(ConfigError):
    """The source can never work as configured (a missing module, every replay file bad).

    Not retried: :class:`ResilientSource` lets it through, so the service stops at start-up
    with this message instead of reopening forever.
    """


class SourceDown(Exception):
    """The source is closed after a failure; the next attempt is due in ``retry_in`` seconds."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class FrameSource(Protocol):
    """What the service needs from a source."""

    name: str
    live: bool
    """Live sources (cameras) keep running while the segmenter is busy: frames are dropped.
    Offline sources (replay) wait for the segmenter, so every triggered frame is processed."""

    def open(self) -> None:
        """Acquire the device / files. Raises :class:`SourceError`."""

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at the end of a finite source. Raises SourceError."""

    def close(self) -> None:
        """Release the device; safe to call twice."""


def _as_bgr(image: NDArray[Any] | None, what: str) -> NDArray[np.uint8]:
    """A camera or video frame as (H, W, 3) uint8 BGR: :func:`edge.preprocess.normalize_image`
    (the segmenter's own check, a no-op on its result), its errors as :class:`SourceError`."""
    if image is None or (isinstance(image, np.ndarray) and image.size == 0):
        raise SourceError(f"{what}: empty frame")
    try:
        return normalize_image(image, f"{what}: frame")
    except InputError as exc:
        raise SourceError(str(exc)) from None


# ------------------------------------------------------------------------------------------
# concrete sources
# ------------------------------------------------------------------------------------------


class ReplaySource:
    """Images of a folder (sorted by name) or the frames of a video file.

    Image files are those of :data:`edge.io.IMAGE_EXTS`, the table ``segment`` lists folders
    with.

    A file that cannot be read (corrupt, unsupported, above ``max_pixels``, not a regular file)
    is skipped, logged and counted (:attr:`skipped`, ``on_skip``), and the next file is read; a
    non-looping replay ends after its last file. A looping replay in which a whole pass yields
    no frame raises :class:`SourceUnusable` instead of spinning.
    """

    live = False

    def __init__(
        self,
        path: str | Path,
        loop: bool = False,
        live: bool = False,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.loop = loop
        self.live = live
        self.max_pixels = max_pixels
        self.on_skip = on_skip
        self.name = f"replay:{self.path}"
        self.skipped = 0
        self._files: list[Path] = []
        self._pos = 0
        self._video: Any = None

    def open(self) -> None:
        self.close()
        self._pos = 0
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not self._files:
                raise SourceError(
                    f"replay: {str(self.path)!r} has no images ({', '.join(sorted(IMAGE_EXTS))})"
                )
        elif self.path.is_file():
            if self.path.suffix.lower() in IMAGE_EXTS:
                self._files = [self.path]
            else:
                self._open_video()
        else:
            kind = describe_path_kind(self.path) or "is not a file or directory"
            raise SourceError(f"replay: {str(self.path)!r} {kind}")

    def _open_video(self) -> None:
        video = cv2.VideoCapture(str(self.path))
        if not video.isOpened():
            raise SourceError(f"replay: cannot open video {str(self.path)!r}")
        w = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.max_pixels is not None and w * h > self.max_pixels:
            video.release()
            raise SourceUnusable(
                f"source.path: video {str(self.path)!r} is {w}x{h} ({w * h / 1e6:.1f} "
                f"megapixels), above source.max_pixels ({self.max_pixels})"
            )
        self._video = video

    def _skip(self, message: str) -> None:
        self.skipped += 1
        _LOGGER.warning(
            "%s: skipping unreadable file (%d so far): %s", self.name, self.skipped, message
        )
        if self.on_skip is not None:
            self.on_skip(message)

    def read(self) -> Frame | None:
        if self._video is not None:
            ok, image = self._video.read()
            if not ok:
                if not self.loop or self._pos == 0:
                    return None
                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._pos = 0
                ok, image = self._video.read()
                if not ok:
                    return None
            self._pos += 1
            return Frame(_as_bgr(image, self.name), f"{self.path.name}#{self._pos}")
        if not self._files:
            raise SourceError("replay: read before open")
        bad_in_a_row = 0
        while True:
            if self._pos >= len(self._files):
                if not self.loop:
                    return None
                self._pos = 0
            if bad_in_a_row >= len(self._files):  # a whole pass without one frame
                raise SourceUnusable(
                    f"source.path: none of the {len(self._files)} image(s) in "
                    f"{str(self.path)!r} can be read (see the warnings above)"
                )
            path = self._files[self._pos]
            self._pos += 1
            try:
                image = read_image(path, max_pixels=self.max_pixels)
            except InputError as exc:
                self._skip(str(exc))
                bad_in_a_row += 1
                continue
            return Frame(image, path.name)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None


class DemoSource:
    """Seeded synthetic demo scenes (the world the demo bundle was trained on)."""

    _CACHE_BYTES = 64 << 20

    def __init__(
        self,
        seed: int,
        count: int,
        width: int,
        height: int,
        loop: bool = False,
        live: bool = False,
    ) -> None:
        self.seed, self.count, self.width, self.height = seed, count, width, height
        self.loop = loop
        self.live = live
        self.name = f"demo:{seed}+{count}@{width}x{height}"
        self._pos = 0
        self._cache: dict[int, NDArray[np.uint8]] = {}
        self._cacheable = count * width * height * 3 <= self._CACHE_BYTES

    def open(self) -> None:
        self._pos = 0

    def read(self) -> Frame | None:
        from edge.demo.scenes import generate_scene

        if self._pos >= self.count:
            if not self.loop:
                return None
            self._pos = 0
        seed = self.seed + self._pos
        self._pos += 1
        image = self._cache.get(seed)
        if image is None:
            image = generate_scene(seed, width=self.width, height=self.height).image
            if self._cacheable:
                self._cache[seed] = image
        return Frame(image.copy(), f"scene_{seed:06d}")

    def close(self) -> None:
        pass


class OpenCVSource:
    """A USB (UVC) camera through OpenCV's V4L2 backend. Frames are BGR."""

    live = True

    def __init__(
        self,
        device: str,
        width: int,
        height: int,
        fps: float,
        fourcc: str = "MJPG",
        discard_frames: int = 5,
        read_timeout_s: float = 5.0,
        capture_factory: Callable[..., Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = fourcc
        self.discard_frames = discard_frames
        self.read_timeout_s = read_timeout_s
        self.name = f"opencv:{device}"
        self._factory = capture_factory
        self._clock = clock or Clock()
        self._cap: Any = None
        self._last_read = 0.0

    def open(self) -> None:
        self.close()
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        if isinstance(target, str) and not os.path.exists(target):
            raise SourceError(f"opencv: {target!r} does not exist (camera unplugged?)")
        if self._factory is not None:
            cap = self._factory(target)
        else:
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"opencv: cannot open {target!r} (unplugged, busy, or no permission: is the user "
                "in the 'video' group?)"
            )
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
            (cv2.CAP_PROP_FPS, self.fps),
            (cv2.CAP_PROP_BUFFERSIZE, 1),
        ):
            if not cap.set(prop, value):
                _LOGGER.debug("opencv: the driver ignored property %s = %s", prop, value)
        for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
            if hasattr(cv2, name):
                cap.set(getattr(cv2, name), self.read_timeout_s * 1000)
        self._cap = cap
        for _ in range(self.discard_frames):
            cap.grab()
        self._last_read = self._clock.now()

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError("opencv: read before open")
        # V4L2 queues a few frames: after a pause, drop the stale ones before the real read.
        if self._clock.now() - self._last_read > 2.0 / max(self.fps, 0.1):
            for _ in range(2):
                self._cap.grab()
        ok, image = self._cap.read()
        self._last_read = self._clock.now()
        if not ok or image is None:
            raise SourceError(f"opencv: no frame from {self.device!r} (disconnected?)")
        return Frame(_as_bgr(image, self.name), self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class StreamSource:
    """A network stream through OpenCV's FFmpeg backend, read on its own thread.

    :meth:`open` starts a reader thread that opens the URL and reads frames as fast as the
    stream sends them, keeping only the newest: :meth:`read` returns a frame newer than the
    last one it returned (waiting up to ``read_timeout_s`` for it), so the latency stays that
    of one frame however slowly frames are taken. A stream that fails to open, ends or stalls
    makes :meth:`read` raise :class:`SourceError` ("stream down: ..."), and
    :class:`ResilientSource` reopens it with its backoff.

    The URL's credentials (``user:password`` from ``credentials_file``) are put into it only
    when it is opened; :attr:`name` and every message show :func:`redact_url`'s form.

    Args:
        url: The stream URL.
        read_timeout_s: Longest wait for the stream to open and for each next frame.
        credentials: ``"user:password"`` (or ``"user"``), or "" for none.
        capture_factory: Test hook: builds the capture from the URL (default
            ``cv2.VideoCapture(url, cv2.CAP_FFMPEG)``).
    """

    live = True

    def __init__(
        self,
        url: str,
        read_timeout_s: float = 5.0,
        credentials: str = "",
        capture_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.url = url
        self.read_timeout_s = read_timeout_s
        self.name = f"stream:{redact_url(url)}"
        self._credentials = credentials
        self._factory = capture_factory
        self._cond = threading.Condition()
        self._frame: NDArray[np.uint8] | None = None
        self._seq = 0  # frames received by the reader
        self._taken = 0  # the sequence number read() returned last
        self._error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        """Frames the reader received since the source was created (dropped ones included)."""

    def _full_url(self) -> str:
        if not self._credentials:
            return self.url
        from urllib.parse import quote, urlsplit, urlunsplit

        parts = urlsplit(self.url)
        user, _, password = self._credentials.partition(":")
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))

    def open(self) -> None:
        self.close()
        self._stop = threading.Event()
        with self._cond:
            self._frame, self._seq, self._taken, self._error = None, 0, 0, ""
        self._thread = threading.Thread(
            target=self._reader, args=(self._stop,), name="stream-reader", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.read_timeout_s
        with self._cond:
            while self._seq == 0 and not self._error:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            error, ok = self._error, self._seq > 0
        if not ok:
            self.close()
            raise SourceError(
                f"stream down: {error or f'no frame within {self.read_timeout_s:g} s'} "
                f"({self.name})"
            )

    def _reader(self, stop: threading.Event) -> None:
        """The reader thread: open, then keep the newest frame until stopped or failed."""
        cap: Any = None
        try:
            if self._factory is not None:
                cap = self._factory(self._full_url())
            else:
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    int(self.read_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    int(self.read_timeout_s * 1000),
                ]
                cap = cv2.VideoCapture(self._full_url(), cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                self._set_error("cannot open the stream (wrong URL or credentials, or down)")
                return
            while not stop.is_set():
                ok, image = cap.read()
                if stop.is_set():
                    return
                if not ok or image is None:
                    self._set_error("the stream ended or stopped sending frames")
                    return
                try:
                    image = _as_bgr(image, self.name)
                except SourceError as exc:
                    self._set_error(str(exc))
                    return
                with self._cond:
                    self._frame = image
                    self._seq += 1
                    self.received += 1
                    self._cond.notify_all()
        except Exception as exc:  # a backend error must end in a reopen, not a dead thread
            self._set_error(f"reader failed: {exc!r}")
        finally:
            if cap is not None:
                cap.release()

    def _set_error(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()

    def read(self) -> Frame | None:
        if self._thread is None:
            raise SourceError("stream: read before open")
        deadline = time.monotonic() + self.read_timeout_s
        with self._cond:
            while self._seq == self._taken and not self._error:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._seq == self._taken:
                why = self._error or f"no new frame for {self.read_timeout_s:g} s"
                raise SourceError(f"stream down: {why} ({self.name})")
            self._taken = self._seq
            image = self._frame
        assert image is not None
        return Frame(image, self.name)

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # the reader notices within one read (bounded by the read timeout)
            thread.join(timeout=self.read_timeout_s + 1.0)
            if thread.is_alive():
                _LOGGER.warning("%s: the reader thread did not stop; left behind", self.name)


class PiCameraSource:
    """A Raspberry Pi camera through picamera2 (imported in :meth:`open` only).

    The ``main`` stream is requested as ``RGB888``: B, G, R bytes in memory, i.e. OpenCV's BGR,
    so frames need no conversion. Reads use ``capture_array(wait=read_timeout_s)`` so that a
    stuck camera raises instead of hanging.
    """

    live = True

    def __init__(
        self,
        camera: int,
        width: int,
        height: int,
        fps: float,
        controls: dict[str, Any],
        read_timeout_s: float = 5.0,
        settle_s: float = 1.0,
        camera_factory: Callable[[int], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.camera = camera
        self.width, self.height, self.fps = width, height, fps
        self.controls = dict(controls)
        self.read_timeout_s = read_timeout_s
        self.settle_s = settle_s
        self.name = f"picamera2:{camera}"
        self._factory = camera_factory
        self._clock = clock or Clock()
        self._cam: Any = None

    def _make(self) -> Any:
        if self._factory is not None:
            return self._factory(self.camera)
        try:
            from picamera2 import Picamera2  # apt python3-picamera2; lazy by design
        except ImportError as exc:  # never fixes itself: a start-up error, not a retry
            raise SourceUnusable(
                f'source.kind = "picamera2": cannot import picamera2 ({exc}); install it with '
                "`sudo apt install "
                "python3-picamera2` and create the venv with --system-site-packages"
            ) from None
        except ValueError as exc:  # numpy ABI mismatch: "numpy.dtype size changed"
            raise SourceUnusable(
                f'source.kind = "picamera2": importing picamera2 failed ({exc}); pip replaced '
                "apt's numpy: pin numpy to the "
                "system version (see `fastsam-edge doctor`)"
            ) from None
        if not Picamera2.global_camera_info():
            raise SourceError("picamera2: no camera detected (check the ribbon cable)")
        return Picamera2(self.camera)

    def open(self) -> None:
        self.close()
        try:
            cam = self._make()
        except (SourceError, SourceUnusable):
            raise
        except Exception as exc:  # libcamera raises RuntimeError for a busy camera
            busy = "busy" in str(exc).lower()
            hint = " (another process owns the camera: stop it first)" if busy else ""
            raise SourceError(
                f"picamera2: cannot open camera {self.camera}: {exc}{hint}"
            ) from None
        try:
            controls = {"FrameRate": float(self.fps), **self.controls}
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                buffer_count=2,
                controls=controls,
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:
            _close_quietly(cam)
            raise SourceError(f"picamera2: cannot start camera {self.camera}: {exc}") from None
        self._cam = cam
        self._clock.sleep(self.settle_s)

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError("picamera2: read before open")
        try:
            image = self._cam.capture_array("main", wait=self.read_timeout_s)
        except Exception as exc:  # TimeoutError and libcamera errors
            raise SourceError(f"picamera2: capture failed: {exc!r}") from None
        return Frame(_as_bgr(image, self.name), self.name)

    def close(self) -> None:
        if self._cam is not None:
            _close_quietly(self._cam)
            self._cam = None


def _close_quietly(cam: Any) -> None:
    for method in ("stop", "close"):
        try:
            getattr(cam, method)()
        except Exception as exc:  # closing a broken camera must not raise
            _LOGGER.debug("picamera2: %s() failed: %r", method, exc)


def make_source(
    cfg: SourceConfig, clock: Clock | None = None, factory: Callable[..., Any] | None = None
) -> FrameSource:
    """Build the configured source (not opened).

    Args:
        cfg: The ``[source]`` table.
        clock: Clock for waits.
        factory: Test hook passed to the camera source (``Picamera2`` or ``VideoCapture``).
    """
    if cfg.kind == "picamera2":
        return PiCameraSource(
            cfg.camera,
            cfg.width,
            cfg.height,
            cfg.fps,
            cfg.controls,
            cfg.read_timeout_s,
            cfg.settle_s,
            factory,
            clock,
        )
    if cfg.kind == "opencv":
        return OpenCVSource(
            cfg.device,
            cfg.width,
            cfg.height,
            cfg.fps,
            cfg.fourcc,
            cfg.discard_frames,
            cfg.read_timeout_s,
            factory,
            clock,
        )
    if cfg.kind == "stream":
        credentials = ""
        if cfg.credentials_file:
            credentials = read_secret_file("source.credentials_file", cfg.credentials_file)
        return StreamSource(cfg.url, cfg.read_timeout_s, credentials, factory)
    if cfg.kind == "replay":
        return ReplaySource(cfg.path, loop=cfg.loop, live=cfg.realtime, max_pixels=cfg.max_pixels)
    if cfg.kind == "demo":
        return DemoSource(cfg.seed, cfg.count, cfg.width, cfg.height, cfg.loop, cfg.realtime)
    raise ConfigError(f"source.kind: unknown source {cfg.kind!r}")


# ------------------------------------------------------------------------------------------
# reopening with backoff
# ------------------------------------------------------------------------------------------


@dataclass
class ResilientSource:
    """Opens a source lazily and reopens it with exponential backoff after any failure.

    :meth:`read` returns a frame, ``None`` at the end of a finite source, or raises
    :class:`SourceDown` (with the seconds until the next attempt) while the source is closed.
    """

    source: FrameSource
    clock: Clock
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    on_error: Callable[[str], None] | None = None
    is_open: bool = False
    failures: int = 0
    last_error: str = ""
    frames: int = 0
    last_frame_at: float | None = None
    _retry_at: float = field(default=0.0, repr=False)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def live(self) -> bool:
        return self.source.live

    def _fail(self, message: str) -> SourceDown:
        self.source.close()
        self.is_open = False
        delay = min(self.backoff_max_s, self.backoff_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        self.last_error = message
        self._retry_at = self.clock.now() + delay
        _LOGGER.warning("%s: %s; reopening in %.1f s", self.source.name, message, delay)
        if self.on_error is not None:
            self.on_error(message)
        return SourceDown(message, delay)

    @property
    def retry_at(self) -> float:
        """Monotonic time of the next reopen attempt."""
        return self._retry_at

    def try_open(self) -> bool:
        """Open now if closed and the backoff has passed; returns whether it is open."""
        if self.is_open:
            return True
        if self.clock.now() < self._retry_at:
            return False
        try:
            self.source.open()
        except SourceUnusable:
            raise  # never fixes itself: the caller stops with this error
        except Exception as exc:
            self._fail(f"open failed: {exc}")
            return False
        self.is_open = True
        if self.failures:
            _LOGGER.warning("%s: reopened after %d failure(s)", self.source.name, self.failures)
        return True

    def read(self) -> Frame | None:
        now = self.clock.now()
        if not self.is_open:
            if now < self._retry_at:
                raise SourceDown(self.last_error or "source closed", self._retry_at - now)
            if not self.try_open():
                raise SourceDown(self.last_error, self._retry_at - self.clock.now())
        try:
            frame = self.source.read()
        except SourceUnusable:
            raise
        except Exception as exc:
            raise self._fail(f"read failed: {exc}") from None
        if frame is None:
            return None
        self.failures = 0
        self.frames += 1
        self.last_frame_at = now
        frame.index = self.frames
        frame.timestamp = self.clock.wall()
        return frame

    def close(self) -> None:
        self.source.close()
        self.is_open = False


# ------------------------------------------------------------------------------------------
# per-frame transforms
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    """How the stored image relates to the captured frame (written to the result JSON).

    A point (x, y) of the stored image is at ``(roi_x + x / scale, roi_y + y / scale)`` in the
    oriented captured frame.
    """

    width: int
    height: int
    roi: tuple[int, int, int, int]
    scale: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "roi_xywh": list(self.roi),
            "scale": round(self.scale, 6),
        }


@dataclass
class FrameTransform:
    """Orientation (flips, then clockwise rotation), ROI crop and the resolution cap."""

    hflip: bool = False
    vflip: bool = False
    rotation: int = 0
    roi: tuple[int, ...] = ()
    max_side: int = 0
    _warned: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def from_config(cls, cfg: ServiceConfig) -> FrameTransform:
        s, p = cfg.source, cfg.processing
        return cls(s.hflip, s.vflip, s.rotation, tuple(p.roi), p.max_mask_side)

    def orient(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if self.hflip and self.vflip:
            image = cv2.flip(image, -1)
        elif self.hflip:
            image = cv2.flip(image, 1)
        elif self.vflip:
            image = cv2.flip(image, 0)
        if self.rotation == 90:
            image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
        elif self.rotation == 180:
            image = cv2.rotate(image, cv2.ROTATE_180)
        elif self.rotation == 270:
            image = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
        return image

    def __call__(self, image: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], Capture]:
        """Oriented, cropped and capped image plus its :class:`Capture` facts.

        Raises:
            ConfigError: The ROI does not overlap the frame at all.
        """
        image = self.orient(image)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = 0, 0, w, h
        if self.roi:
            rx, ry, rw, rh = self.roi
            x0, y0 = min(rx, w), min(ry, h)
            x1, y1 = min(rx + rw, w), min(ry + rh, h)
            if x1 <= x0 or y1 <= y0:
                raise ConfigError(
                    f"processing.roi: {list(self.roi)} lies outside the {w}x{h} frame"
                )
            if (x1 - x0, y1 - y0) != (rw, rh) and "roi" not in self._warned:
                self._warned.add("roi")
                _LOGGER.warning(
                    "processing.roi %s extends past the %dx%d frame; using [%d, %d, %d, %d]",
                    list(self.roi),
                    w,
                    h,
                    x0,
                    y0,
                    x1 - x0,
                    y1 - y0,
                )
            image = image[y0:y1, x0:x1]
        ch, cw = image.shape[:2]
        scale = 1.0
        if self.max_side and max(ch, cw) > self.max_side:
            scale = self.max_side / max(ch, cw)
            size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
            # below 2x, bilinear samples every input pixel's neighbourhood closely enough and
            # costs a fifth of INTER_AREA's fractional path (1080p -> 1280 px: 1.7 vs 8.8 ms);
            # larger reductions need the area average against aliasing
            interpolation = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
            image = cv2.resize(image, size, interpolation=interpolation)
            scale = size[0] / cw
        return np.ascontiguousarray(image), Capture(w, h, (x0, y0, x1 - x0, y1 - y0), scale)


def padding_waste(
    image_hw: tuple[int, int], input_hw: tuple[int, int], dynamic: bool, stride: int = 32
) -> float:
    """Fraction of the model input filled with letterbox padding for frames of ``image_hw``.

    For dynamic-shape bundles the input shrinks to the smallest stride multiple, so only the
    rounding is wasted.
    """
    h, w = image_hw
    ih, iw = input_hw
    r = min(ih / h, iw / w)
    nh, nw = h * r, w * r
    if dynamic:
        ih = int(np.ceil(nh / stride) * stride)
        iw = int(np.ceil(nw / stride) * stride)
    return float(1.0 - (nh * nw) / (ih * iw))
