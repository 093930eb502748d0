"""The central result type: parallel arrays of boxes, scores and masks.

Masks are stored as per-box crops (a bool array plus its top-left offset in the source frame), so
memory follows mask area; :attr:`Masks.mask` densifies to (N, H, W) on access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

ImageBGR = NDArray[np.uint8]
"""(H, W, 3) uint8 image in OpenCV's BGR channel order."""

TIMING_KEYS = ("preprocess", "infer", "postprocess")


@dataclass(frozen=True)
class MaskCrop:
    """One binary mask stored as a crop of the frame.

    Attributes:
        data: (h, w) bool pixels of the crop.
        x0: Column of the crop's left edge in the frame.
        y0: Row of the crop's top edge in the frame.
    """

    data: NDArray[np.bool_]
    x0: int
    y0: int

    @classmethod
    def from_dense(cls, mask: NDArray[np.bool_], x0: int = 0, y0: int = 0) -> MaskCrop:
        """Tight crop of a (H, W) bool mask whose top-left pixel sits at ``(x0, y0)``.

        An empty mask gives a 0x0 crop at ``(x0, y0)``.
        """
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return cls(np.zeros((0, 0), dtype=bool), int(x0), int(y0))
        ty0, ty1, tx0, tx1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        return cls(np.ascontiguousarray(mask[ty0:ty1, tx0:tx1]), int(x0) + tx0, int(y0) + ty0)

    @property
    def area(self) -> int:
        """Number of foreground pixels."""
        return int(np.count_nonzero(self.data))

    def paste(self, out: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Write the crop into a (H, W) bool frame ``out`` and return it."""
        h, w = self.data.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] |= self.data
        return out

    def dense(self, height: int, width: int) -> NDArray[np.bool_]:
        """Return the mask as a (height, width) bool frame."""
        return self.paste(np.zeros((height, width), dtype=bool))

    def contains(self, x: int, y: int) -> bool:
        """Whether pixel (x, y) of the frame is foreground."""
        h, w = self.data.shape
        cx, cy = x - self.x0, y - self.y0
        return 0 <= cx < w and 0 <= cy < h and bool(self.data[cy, cx])


@dataclass
class Masks:
    """Segmentation result: N masks with boxes and scores, in score-descending order.

    Attributes:
        xyxy: (N, 4) float32 boxes in source pixels (after FastSAM's full-box step).
        confidence: (N,) float32 detection scores.
        crops: N :class:`MaskCrop` objects (the masks, cropped to their box ROI).
        image_hw: (height, width) of the source image.
        timings: Milliseconds per stage: ``preprocess``, ``infer``, ``postprocess`` (and
            ``prompt`` when prompts were applied).
        data: Per-mask extras, each an array of length N (e.g. ``"prompt_index"``).
        metadata: Per-frame facts (``frame_id``, bundle name, thresholds, ...).
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    crops: tuple[MaskCrop, ...]
    image_hw: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    data: dict[str, NDArray[Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.crops)
        self.crops = tuple(self.crops)
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must have shape ({n}, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {self.confidence.shape}")
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] must have length {n}, got {len(value)}")

    @classmethod
    def empty(cls, height: int, width: int) -> Masks:
        """A result with no masks for a (height, width) frame."""
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            crops=(),
            image_hw=(height, width),
        )

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int | slice | Sequence[int] | NDArray[Any]) -> Masks:
        """Select masks by int, slice, integer array or boolean array; returns a new result."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        return Masks(
            xyxy=self.xyxy[idx],
            confidence=self.confidence[idx],
            crops=tuple(self.crops[i] for i in idx),
            image_hw=self.image_hw,
            timings=dict(self.timings),
            data={k: np.asarray(v)[idx] for k, v in self.data.items()},
            metadata=dict(self.metadata),
        )

    @property
    def mask(self) -> NDArray[np.bool_]:
        """(N, H, W) bool masks at source resolution (densified on each access)."""
        h, w = self.image_hw
        out = np.zeros((len(self), h, w), dtype=bool)
        for i, crop in enumerate(self.crops):
            crop.paste(out[i])
        return out

    @property
    def area(self) -> NDArray[np.int64]:
        """(N,) int64 number of foreground pixels per mask."""
        return np.array([c.area for c in self.crops], dtype=np.int64)

    def to_coco(self, image_id: int | str = 1, category_id: int = 1) -> list[dict[str, Any]]:
        """COCO detection results of this frame, ready for ``COCO.loadRes``.

        One dict per mask: ``image_id``, ``category_id``, ``bbox`` (``x, y, w, h``), ``score``,
        ``segmentation`` (compressed RLE, decodable by ``pycocotools.mask.decode``), ``area``.

        Args:
            image_id: COCO id of the frame.
            category_id: Category of every mask (FastSAM is class-agnostic).
        """
        from edge.coco import masks_to_coco  # edge.coco imports this module

        return masks_to_coco(self, image_id, category_id)
