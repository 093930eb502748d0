"""edge.service.live: the frames kept for prompts (bounds, eviction order) and the live frame."""

from __future__ import annotations

import numpy as np
import pytest

from edge.service.live import (
    VIEWER_TTL_S,
    CachedFrame,
    LiveFrame,
    PromptCache,
    encode_jpeg,
    without_pixels,
)


class FakeDets:
    """Detections stand-in: a size, and masks that can be released."""

    def __init__(self, nbytes: int, masks: int = 0, image: np.ndarray | None = None) -> None:
        self._base, self._masks, self.image = nbytes, masks, image

    @property
    def nbytes(self) -> int:
        return self._base + self._masks

    @property
    def num_assembled(self) -> int:
        return int(self._masks > 0)

    def release_masks(self) -> None:
        self._masks = 0


def _frame(i: int, size: int = 100, dets: FakeDets | None = None, prompted: bool = False):
    image = np.zeros((size, 1, 1), np.uint8)  # `size` bytes
    return CachedFrame(i, image, f"f{i}", float(i), detections=dets, prompted=prompted)


@pytest.mark.parametrize(
    ("max_frames", "max_bytes", "sizes", "kept"),
    [
        (4, 10_000, [100] * 6, [2, 3, 4, 5]),  # frame bound, oldest first
        (10, 350, [100] * 6, [3, 4, 5]),  # byte bound
        (10, 350, [100, 100, 300], [2]),  # a big new frame pushes out several
        (1, 10_000, [100, 100], [1]),
    ],
)
def test_bounds_evict_oldest_first(max_frames, max_bytes, sizes, kept) -> None:
    cache = PromptCache(max_frames, max_bytes)
    for i, size in enumerate(sizes):
        cache.put(_frame(i, size))
        assert len(cache) <= max_frames and cache.nbytes <= max_bytes
    assert cache.frame_ids() == kept
    assert cache.evicted == len(sizes) - len(kept)
    assert all(cache.was_evicted(i) for i in range(len(sizes)) if i not in kept)
    assert not cache.was_evicted(kept[-1])


def test_prompted_frames_and_the_shown_frame_are_evicted_last() -> None:
    cache = PromptCache(3, 10_000)
    cache.put(_frame(0), shown=True)
    for i in range(1, 6):  # segmented frames nobody looks at
        cache.put(_frame(i))
    assert cache.frame_ids() == [0, 4, 5]
    cache.put(_frame(6), shown=True)  # the page shows newer frames: after SHOWN_PER_VIEWER
    cache.put(_frame(7), shown=True)  # of them, 0 loses its protection
    assert cache.frame_ids() == [5, 6, 7]
    cache.get(5).prompted = True
    for i in range(8, 12):  # a frame shown before goes before a prompted one
        cache.put(_frame(i))
    assert cache.frame_ids() == [5, 7, 11]
    cache.get(11).prompted = True
    cache.put(_frame(12, prompted=True))  # only protected ones: the oldest prompted goes,
    assert cache.frame_ids() == [7, 11, 12]  # the frame the page shows now stays


def test_put_merges_detections_and_prompted_into_the_kept_entry() -> None:
    cache = PromptCache(4, 10_000)
    shown = cache.put(_frame(3), shown=True)
    dets = FakeDets(50)
    kept = cache.put(_frame(3, dets=dets, prompted=True))
    assert kept is shown and kept.detections is dets and kept.prompted
    assert cache.get(3) is shown and cache.get(4) is None


def test_latest_is_the_newest_segmented_frame() -> None:
    cache = PromptCache(4, 10_000)
    assert cache.get("latest") is None
    cache.put(_frame(1, dets=FakeDets(10)))
    cache.put(_frame(2))  # shown, not segmented
    assert cache.get("latest").frame_id == 1


def test_a_frame_over_the_whole_budget_drops_its_masks_first() -> None:
    cache = PromptCache(4, 1_000)
    dets = FakeDets(500, masks=800)
    cache.put(_frame(0, size=100, dets=dets))
    assert cache.frame_ids() == [0] and dets.num_assembled == 0 and cache.nbytes <= 1_000
    cache.put(_frame(1, size=2_000))  # cannot fit even alone: not kept
    assert cache.frame_ids() == [] and cache.was_evicted(1)


def test_refit_applies_the_bound_after_growth() -> None:
    cache = PromptCache(4, 1_000)
    cache.put(_frame(0, size=300))
    dets = FakeDets(100)
    cache.put(_frame(1, size=100, dets=dets))
    dets._masks = 700  # masks assembled by a prompt
    cache.refit(1)
    assert cache.frame_ids() == [1] and cache.nbytes <= 1_000


def test_image_shared_with_the_detections_counts_once() -> None:
    image = np.zeros((100, 1, 1), np.uint8)
    entry = CachedFrame(0, image, "f", 0.0, detections=FakeDets(100, image=image))
    assert entry.nbytes == 100
    entry.detections = FakeDets(100)
    assert entry.nbytes == 200


def test_live_frame_watch_window_and_jpeg() -> None:
    live = LiveFrame()
    assert live.latest() == (None, None) and not live.watched(0.0)
    live.touch(100.0)
    assert live.watched(100.0 + VIEWER_TTL_S - 0.1) and not live.watched(100.0 + VIEWER_TTL_S)
    image = np.full((48, 64, 3), 128, np.uint8)
    entry = CachedFrame(7, image, "scene", 1.0)
    live.offer(entry, 5.0)
    assert live.latest() == (entry, 5.0)
    data = entry.jpeg()
    assert data[:2] == b"\xff\xd8" and entry.jpeg() is data
    assert entry.nbytes == image.nbytes + len(data)
    with pytest.raises(ValueError, match="JPEG"):
        encode_jpeg(np.zeros((0, 5, 3), np.uint8))


def test_kept_frames_drop_the_raw_capture() -> None:
    from edge.sources import Frame

    raw = Frame(np.zeros((3000, 4000, 3), np.uint8), "cam", 7, 12.5)
    light = without_pixels(raw)
    assert (light.name, light.index, light.timestamp) == ("cam", 7, 12.5)
    assert light.image.nbytes == 0 and raw.image.shape == (3000, 4000, 3)
    assert without_pixels(None) is None


def test_a_second_viewer_does_not_evict_the_first_viewers_frame() -> None:
    cache = PromptCache(4, 10_000)
    cache.put(_frame(1), shown=True, viewer="tab-a")  # the first page shows frame 1, pauses
    for i in range(2, 40):  # a second page (or a monitor) polls the live frame, and every
        cache.put(_frame(i, dets=FakeDets(50)), shown=True, viewer="tab-b")  # frame is kept
        cache.put(_frame(1000 + i, dets=FakeDets(50)))  # triggered frames segmented too
        assert 1 in cache.frame_ids(), i
        assert len(cache) <= 4
    assert cache.shown_ids() == {"tab-a": [1], "tab-b": [38, 39]}
    assert 39 in cache.frame_ids()  # and the second page's own frame too


def test_viewers_are_bounded_and_the_oldest_forgotten() -> None:
    from edge.service.live import MAX_VIEWERS, SHOWN_PER_VIEWER

    cache = PromptCache(4, 10_000)
    for i in range(MAX_VIEWERS * 5):
        for j in range(3):
            cache.put(_frame(i * 3 + j), shown=True, viewer=f"v{i}")
        assert len(cache) <= 4
    shown = cache.shown_ids()
    assert len(shown) == MAX_VIEWERS and all(len(v) <= SHOWN_PER_VIEWER for v in shown.values())
    st = cache.viewer_stats()
    assert st["entries"] == MAX_VIEWERS and st["evictions"] == MAX_VIEWERS * 4
    assert st["bytes"] <= st["max_bytes"]
    # many viewers cannot pin more frames than the cache holds: the newest still goes in
    assert cache.frame_ids()[-1] == MAX_VIEWERS * 15 - 1
