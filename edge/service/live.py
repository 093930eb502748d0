"""Frames for the browser page: the live frame, and the frames kept for prompts.

* :class:`LiveFrame` holds the newest frame read from the source (whatever read it) and whether
  a page is watching (a request for the live JPEG in the last :data:`VIEWER_TTL_S` seconds).
  While one is, the frame loop reads frames of a live source at ``http.live_fps`` even when no
  trigger fires; without a viewer nothing extra is read.
* :class:`PromptCache` keeps the last ``http.prompt_cache_frames`` frames that were segmented
  or shown to a page, with their detections (:meth:`edge.segmenter.Segmenter.detect`), so that
  ``POST /prompt`` answers a click, a box or a text on a frame without running the detector
  again. It is bounded in frames and in bytes (``http.prompt_cache_mb``). Frames prompted
  from a page and the frames each page was last shown are evicted after the others (so that a
  click on what a page shows finds its frame even while every frame is segmented), oldest
  first. Pages are told apart by the viewer id they send (``GET /live.jpg?viewer=...``): each
  keeps its last :data:`SHOWN_PER_VIEWER` frames, for at most :data:`MAX_VIEWERS` viewers, so
  a second tab or a monitor polling the live JPEG never moves another page's frame.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError
from edge.service.protocols import DetectsAndSelects

if TYPE_CHECKING:
    from edge.postprocess import Detections
    from edge.prompts import Prompt
    from edge.service.protocols import SegmentsFrames
    from edge.types import Masks

VIEWER_TTL_S = 10.0
"""A page counts as watching for this long after its last live-frame request."""

JPEG_QUALITY = 80

SHOWN_PER_VIEWER = 2
"""Frames a viewer (a page) was last shown that stay protected from eviction."""
MAX_VIEWERS = 16
"""Viewers remembered (the least recently seen forgotten first)."""
VIEWER_BYTES = 256
"""Memory of one remembered viewer (id and frame ids), for the cache metrics."""
ANONYMOUS_VIEWER = "-"


def encode_jpeg(image: NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """BGR image -> JPEG bytes.

    Raises:
        ValueError: OpenCV could not encode the image.
    """
    import cv2

    try:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except cv2.error as exc:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG: {exc}") from None
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG")
    return bytes(buf.tobytes())


_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def without_pixels(frame: Any) -> Any:
    """A source frame's facts (name, index, timestamp) without its raw pixels: a kept frame
    holds the processed image only, not also the raw capture (maybe 12 MP before the ROI/cap)."""
    if dataclasses.is_dataclass(frame) and not isinstance(frame, type):
        return dataclasses.replace(frame, image=_NO_PIXELS)
    return frame


@dataclass
class CachedFrame:
    """One frame kept for prompts.

    Attributes:
        frame_id: The service's frame number.
        image: Stored-resolution BGR image (what prompts' coordinates refer to).
        name: Source name of the frame (e.g. ``scene_001234``).
        timestamp: Capture time (epoch seconds).
        frame: The source's frame facts (:func:`without_pixels`), for the result JSON.
        capture: Capture facts (orientation, ROI), if any.
        detections: The detector's output once the frame was segmented, else ``None``.
        prompted: Prompted from a page or the API: evicted after the others.
    """

    frame_id: int
    image: NDArray[np.uint8]
    name: str
    timestamp: float
    frame: Any = None
    capture: Any = None
    detections: Detections | None = None
    prompted: bool = False
    _jpeg: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, frame: Any, image: NDArray[np.uint8], capture: Any) -> CachedFrame:
        """A source frame (``edge.service.sources.Frame``) as read and transformed to
        ``image``, not segmented yet."""
        return cls(frame.index, image, frame.name, frame.timestamp, without_pixels(frame), capture)

    @property
    def nbytes(self) -> int:
        """Memory held (the detections include the image when set)."""
        dets = self.detections
        size = dets.nbytes if dets is not None else 0
        if dets is None or dets.image is not self.image:
            size += self.image.nbytes
        return int(size + (len(self._jpeg) if self._jpeg else 0))

    def jpeg(self) -> bytes:
        """The image as JPEG (encoded once)."""
        if self._jpeg is None:
            self._jpeg = encode_jpeg(self.image)
        return self._jpeg


class PromptCache:
    """The last frames with their detections, bounded in frames and bytes (thread-safe).

    Args:
        max_frames: Frames kept (``http.prompt_cache_frames``); 0 disables the cache.
        max_bytes: Bytes kept (``http.prompt_cache_mb``). A frame over the whole budget first
            drops its assembled masks (re-assembled on demand), and is not kept if still over.
    """

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, CachedFrame] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0
        self._evicted_ids: OrderedDict[int, None] = OrderedDict()
        self._shown: OrderedDict[str, list[int]] = OrderedDict()  # viewer -> newest last
        self.viewers_forgotten = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(e.nbytes for e in self._items.values())

    def frame_ids(self) -> list[int]:
        """Kept frame ids, oldest first."""
        with self._lock:
            return list(self._items)

    def put(
        self, entry: CachedFrame, shown: bool = False, viewer: str = ANONYMOUS_VIEWER
    ) -> CachedFrame:
        """Add (or update) a frame; returns the kept entry (an existing one is merged).

        ``shown``: the page ``viewer`` is showing it now (protected while it is among that
        viewer's last :data:`SHOWN_PER_VIEWER` frames)."""
        with self._lock:
            old = self._items.get(entry.frame_id)
            if old is not None:
                if entry.detections is not None:
                    old.detections = entry.detections
                old.prompted = old.prompted or entry.prompted
                entry = old
            else:
                self._items[entry.frame_id] = entry
            if shown:
                self._show(viewer, entry.frame_id)
            self._shrink(keep=entry.frame_id)
            return entry

    def _show(self, viewer: str, frame_id: int) -> None:
        ids = self._shown.pop(viewer, [])
        if frame_id in ids:
            ids.remove(frame_id)
        ids.append(frame_id)
        self._shown[viewer] = ids[-SHOWN_PER_VIEWER:]
        while len(self._shown) > MAX_VIEWERS:
            self._shown.popitem(last=False)
            self.viewers_forgotten += 1

    def shown_ids(self) -> dict[str, list[int]]:
        """Each viewer's protected frame ids, newest last."""
        with self._lock:
            return {v: list(ids) for v, ids in self._shown.items()}

    def viewer_stats(self) -> dict[str, int]:
        """The remembered viewers as a cache (``entries``, ``bytes``, bounds, evictions)."""
        with self._lock:
            n = len(self._shown)
        return {
            "entries": n,
            "bytes": n * VIEWER_BYTES,
            "max_entries": MAX_VIEWERS,
            "max_bytes": MAX_VIEWERS * VIEWER_BYTES,
            "evictions": self.viewers_forgotten,
        }

    def segment(
        self,
        seg: SegmentsFrames,
        entry: CachedFrame,
        kept: bool = False,
        prompt: list[Prompt] | None = None,
        **thresholds: Any,
    ) -> Masks:
        """Detect once, keep, select: the masks of ``entry``'s frame.

        A new frame is detected, kept with its detections (when the cache is on), then
        selected; a kept frame (``kept``: ``POST /prompt``) is prompted on its detections,
        detected first if a page only showed it. A segmenter that cannot detect and select
        separately, or a disabled cache, segments a new frame in one call.

        Args:
            seg: The service's segmenter.
            entry: The frame (:meth:`CachedFrame.of`, or the kept entry).
            kept: ``entry`` is a kept frame being prompted.
            prompt: Prompts (``None``: everything mode).
            thresholds: ``conf`` / ``iou`` / ``max_det`` for the detector.

        Raises:
            InputError: A prompt that does not fit the frame (before any inference), or a kept
                frame with a segmenter that cannot prompt one.
        """
        if not isinstance(seg, DetectsAndSelects) or (not kept and not self.max_frames):
            if kept:  # the page admits /prompt only with such a segmenter
                raise InputError("prompt: the loaded segmenter cannot prompt kept frames")
            return seg.segment(entry.image, prompt=prompt, **thresholds)
        if entry.detections is None:
            if prompt is not None:  # a bad prompt is the caller's error before any inference
                from edge.prompts import check_prompts

                prompt = check_prompts(prompt, entry.image.shape[:2])  # not checked again
            entry.detections = seg.detect(entry.image, **thresholds)
            if not kept:
                entry = self.put(entry)
        assert entry.detections is not None
        result = seg.select(entry.detections, prompt)
        self.refit(entry.frame_id)  # masks and CLIP embeddings added bytes
        return result

    def get(self, frame_id: int | str) -> CachedFrame | None:
        """The entry of ``frame_id`` (``"latest"``: the newest segmented frame), or None."""
        with self._lock:
            if frame_id == "latest":
                for entry in reversed(self._items.values()):
                    if entry.detections is not None:
                        return entry
                return None
            assert isinstance(frame_id, int)
            return self._items.get(frame_id)

    def was_evicted(self, frame_id: int) -> bool:
        """Whether ``frame_id`` was kept once and evicted since (for a clear 404)."""
        with self._lock:
            return frame_id in self._evicted_ids

    def refit(self, frame_id: int) -> None:
        """Re-apply the byte bound after ``frame_id``'s entry grew (masks assembled, CLIP)."""
        with self._lock:
            self._shrink(keep=frame_id)

    def _shrink(self, keep: int) -> None:
        def over() -> bool:
            size = sum(e.nbytes for e in self._items.values())
            return len(self._items) > self.max_frames or size > self.max_bytes

        shown = {k for ids in self._shown.values() for k in ids}
        current = {ids[-1] for ids in self._shown.values() if ids}  # what each page shows now
        while self._items and over():
            # evicted first to last: plain frames, frames pages showed before, prompted frames,
            # what a page shows now
            items = [(k, e) for k, e in self._items.items() if k != keep]
            victims = [k for k, e in items if not e.prompted and k not in shown]
            victims = victims or [k for k, e in items if not e.prompted and k not in current]
            victims = victims or [k for k, _ in items if k not in current]
            victims = victims or [k for k, _ in items]
            if not victims:  # only the newest frame is left and it alone is over the budget
                entry = self._items[keep]
                dets = entry.detections
                if dets is not None and dets.num_assembled:
                    dets.release_masks()
                    continue
                self._evict(keep)
                break
            self._evict(victims[0])

    def _evict(self, frame_id: int) -> None:
        del self._items[frame_id]
        self.evicted += 1
        self._evicted_ids[frame_id] = None
        while len(self._evicted_ids) > 1024:
            self._evicted_ids.popitem(last=False)


class LiveFrame:
    """The newest frame read from the source and the page viewers' activity (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: CachedFrame | None = None
        self._read_at: float | None = None
        self._watched_until = 0.0

    def offer(self, entry: CachedFrame, now: float) -> None:
        """Record a frame just read (``now``: monotonic time of the read)."""
        with self._lock:
            self._entry = entry
            self._read_at = now

    def latest(self) -> tuple[CachedFrame | None, float | None]:
        """The newest frame and the monotonic time it was read."""
        with self._lock:
            return self._entry, self._read_at

    def touch(self, now: float) -> None:
        """A page asked for the live frame: keep reading frames for it."""
        with self._lock:
            self._watched_until = now + VIEWER_TTL_S

    def watched(self, now: float) -> bool:
        """Whether a page asked for the live frame in the last :data:`VIEWER_TTL_S` s."""
        with self._lock:
            return now < self._watched_until
