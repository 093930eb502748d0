"""Objects across frames in the service: the tracker on segmented frames, and their events.

With ``processing.track = true`` the output stage hands every segmented frame of the
sequence (not the ``POST /prompt`` answers on kept frames, nor prompted requests, whose masks
are selections) to :class:`FrameTracker`, in frame order. It sets ``Masks.track_id`` and turns
the tracker's :class:`~edge.track.TrackEvent` into the event JSON::

    {"type": "enter" | "leave", "event_type": (the same), "track_id": 7, "frame_id": 1234,
     "time": "2026-12-06T20:41:07.512+00:00", "box": [x1, y1, x2, y2],
     "label": "person" (bundles with classes), "result_dir": "..." (when the frame was saved)}

(``event_type`` is what a Home Assistant MQTT event entity reads.) The newest
``events.recent`` events stay in an :class:`EventLog` for the page, each with a small JPEG of
the object (an ``enter``: cut from that frame; a ``leave``: the one taken when it entered).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import threading
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.track import Tracker, TrackerConfig, TrackEvent

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge.service.config import ServiceConfig
    from edge.types import Masks

THUMB_SIDE = 96
"""Longer side of an event's thumbnail in pixels."""


def event_time(timestamp: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds (the result JSON's form)."""
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat(timespec="milliseconds")


def event_doc(
    event: TrackEvent, frame_id: int, timestamp: float, names: Any = ()
) -> dict[str, Any]:
    """The JSON of one event (see the module docstring; ``result_dir`` is added once saved).

    Args:
        event: The tracker's event.
        frame_id: The service's id of the frame it happened on.
        timestamp: That frame's capture time (seconds since the epoch).
        names: The bundle's class names (``Masks.names``); empty for class-agnostic masks.
    """
    doc: dict[str, Any] = {
        "type": event.type,
        "event_type": event.type,
        "track_id": event.track_id,
        "frame_id": frame_id,
        "time": event_time(timestamp),
        "box": [round(float(v), 1) for v in event.box],
    }
    if 0 <= event.class_id < len(names):
        doc["label"] = str(names[event.class_id])
    return doc


def box_thumbnail(image: NDArray[np.uint8], box: Any, side: int = THUMB_SIDE) -> bytes | None:
    """A JPEG of ``image`` around ``box`` (a quarter of its size added on each side), its
    longer side ``side`` pixels; None for a box outside the image."""
    import cv2

    from edge.service.live import encode_jpeg

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    px, py = (x2 - x1) / 4 + 2, (y2 - y1) / 4 + 2
    c0, r0 = max(int(x1 - px), 0), max(int(y1 - py), 0)
    c1, r1 = min(int(x2 + px) + 1, w), min(int(y2 + py) + 1, h)
    if c1 <= c0 or r1 <= r0:
        return None
    crop = image[r0:r1, c0:c1]
    scale = side / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return encode_jpeg(cv2.resize(crop, size, interpolation=interp), 80)


class EventLog:
    """The newest events with their thumbnails, for the page (thread-safe).

    Args:
        size: Events kept (``events.recent``).
    """

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._thumbs: dict[int, bytes] = {}
        self._seq = itertools.count(1)

    def add(self, doc: dict[str, Any], thumb: bytes | None) -> None:
        """Keep an event (its ``seq`` and ``thumb`` fields are added to the page's copy)."""
        with self._lock:
            seq = next(self._seq)
            entry = {**doc, "seq": seq, "thumb": thumb is not None}
            if len(self._events) == self._events.maxlen:
                self._thumbs.pop(self._events[0]["seq"], None)
            self._events.append(entry)
            if thumb is not None:
                self._thumbs[seq] = thumb

    def recent(self) -> list[dict[str, Any]]:
        """The kept events, newest first."""
        with self._lock:
            return [dict(e) for e in reversed(self._events)]

    def thumbnail(self, seq: int) -> bytes | None:
        """The JPEG of event ``seq`` while it is kept."""
        with self._lock:
            return self._thumbs.get(seq)

    @property
    def nbytes(self) -> int:
        """Bytes of the kept thumbnails."""
        with self._lock:
            return sum(len(b) for b in self._thumbs.values())


class FrameTracker:
    """The service's tracker: track ids on each frame of the sequence, events as JSON.

    Args:
        cfg: The configuration (``events.min_frames``, ``events.max_missed``,
            ``events.recent``).
    """

    def __init__(self, cfg: ServiceConfig) -> None:
        ev = cfg.events
        self.tracker = Tracker(TrackerConfig(min_frames=ev.min_frames, max_missed=ev.max_missed))
        self.log = EventLog(ev.recent)
        self._enter_thumbs: dict[int, bytes] = {}

    def update(
        self, result: Masks, image: NDArray[np.uint8], frame_id: int, timestamp: float
    ) -> tuple[Masks, list[dict[str, Any]], list[bytes | None]]:
        """Track one frame.

        Args:
            result: The frame's masks (not modified).
            image: The frame (for the thumbnails).
            frame_id: Its id.
            timestamp: Its capture time, seconds since the epoch.

        Returns:
            ``(result, events, thumbnails)``: a copy of ``result`` with ``track_id`` set and
            ``metadata["tracking"] = True``; the events of this frame as JSON; a thumbnail
            per event (None where none could be cut).
        """
        ids = self.tracker.update(result)
        tracked = replace(result, track_id=ids, metadata={**result.metadata, "tracking": True})
        names = getattr(result, "names", ())
        docs, thumbs = [], []
        for event in self.tracker.events:
            docs.append(event_doc(event, frame_id, timestamp, names))
            if event.type == "enter":
                thumb = box_thumbnail(image, event.box)
                if thumb is not None:
                    self._enter_thumbs[event.track_id] = thumb
            else:
                thumb = self._enter_thumbs.pop(event.track_id, None)
            thumbs.append(thumb)
        return tracked, docs, thumbs
