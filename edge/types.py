"""The central result type: parallel arrays of boxes, scores and masks.

Masks are stored as per-box crops (bit-packed rows plus their top-left offset in the source frame),
so memory follows an eighth of the box area; :attr:`Masks.mask` densifies to (N, H, W) on access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

ImageBGR = NDArray[np.uint8]
"""(H, W, 3) uint8 image in OpenCV's BGR channel order."""


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
"""Set bits of every byte value (numpy < 2 has no ``bitwise_count``)."""


class MaskCrop:
    """One binary mask stored as a bit-packed crop of the frame.

    The crop's rows are packed 8 pixels to a byte (``np.packbits`` along rows, most
    significant bit first, the last byte of a row zero-padded), so a mask takes an eighth of a
    bool array: 300 masks of 1080p boxes hold ~75 MiB instead of ~600 MiB. :attr:`data`
    decodes the bool pixels on each access; consumers that loop over many masks decode one at
    a time, and :meth:`contains` / :meth:`count_in` read the packed bits directly.

    Immutable: the attributes cannot be reassigned and :attr:`bits` is read-only.

    Attributes:
        bits: (h, ceil(w / 8)) uint8 packed rows.
        width: Crop width in pixels (the packed rows do not say it).
        x0: Column of the crop's left edge in the frame.
        y0: Row of the crop's top edge in the frame.
    """

    __slots__ = ("_area", "bits", "width", "x0", "y0")

    bits: NDArray[np.uint8]
    width: int
    x0: int
    y0: int

    def __init__(self, data: NDArray[np.bool_], x0: int, y0: int) -> None:
        """Pack a (h, w) bool crop whose top-left pixel sits at frame ``(x0, y0)``.

        Raises:
            ValueError: ``data`` is not 2-D.
        """
        if not isinstance(data, np.ndarray) or data.dtype != np.bool_:
            data = np.asarray(data)
            data = data if data.dtype == np.bool_ else data != 0
        if data.ndim != 2:
            raise ValueError(f"MaskCrop: data must be 2-D (h, w), got shape {data.shape}")
        self._init(np.packbits(data, axis=1), data.shape[1], x0, y0, int(np.count_nonzero(data)))

    def _init(self, bits: NDArray[np.uint8], width: int, x0: int, y0: int, area: int) -> None:
        bits.flags.writeable = False
        put = object.__setattr__  # immutable to everyone else (see __setattr__)
        put(self, "bits", bits)
        put(self, "width", int(width))
        put(self, "x0", int(x0))
        put(self, "y0", int(y0))
        put(self, "_area", area)

    @classmethod
    def from_bits(
        cls, bits: NDArray[np.uint8], width: int, x0: int, y0: int, area: int | None = None
    ) -> MaskCrop:
        """A crop from rows already packed with ``np.packbits(mask, axis=1)`` (not copied).

        Args:
            bits: (h, ceil(width / 8)) uint8 packed rows; padding bits must be zero.
            width: Crop width in pixels.
            x0: Column of the crop's left edge in the frame.
            y0: Row of the crop's top edge in the frame.
            area: Foreground pixel count, if known (counted from the bits otherwise).

        Raises:
            ValueError: ``bits`` does not have ``ceil(width / 8)`` uint8 columns.
        """
        bits = np.asarray(bits)
        if bits.ndim != 2 or bits.dtype != np.uint8 or bits.shape[1] != (int(width) + 7) // 8:
            raise ValueError(
                f"MaskCrop: bits must be (h, {(int(width) + 7) // 8}) uint8 for width {width}, "
                f"got {bits.dtype} {bits.shape}"
            )
        if area is None:
            area = int(_POPCOUNT[bits].sum(dtype=np.int64))
        crop = cls.__new__(cls)
        crop._init(bits, width, x0, y0, int(area))
        return crop

    @classmethod
    def from_dense(cls, mask: NDArray[np.bool_], x0: int = 0, y0: int = 0) -> MaskCrop:
        """Tight crop of a (H, W) bool mask whose top-left pixel sits at ``(x0, y0)``.

        An empty mask gives a 0x0 crop at ``(x0, y0)``.
        """
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return cls(np.zeros((0, 0), dtype=bool), int(x0), int(y0))
        ty0, ty1, tx0, tx1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        return cls(mask[ty0:ty1, tx0:tx1], int(x0) + tx0, int(y0) + ty0)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"MaskCrop is immutable (cannot set {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle/copy would restore slots with setattr, which immutability refuses
        return (MaskCrop.from_bits, (self.bits, self.width, self.x0, self.y0, self._area))

    def __repr__(self) -> str:
        h, w = self.shape
        return f"MaskCrop({w}x{h} at ({self.x0}, {self.y0}), area={self._area})"

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the crop, without decoding it."""
        return int(self.bits.shape[0]), self.width

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed pixels."""
        return int(self.bits.nbytes)

    @property
    def data(self) -> NDArray[np.bool_]:
        """(h, w) bool pixels of the crop, decoded on each access (a new, writable array)."""
        h, w = self.shape
        if h == 0 or w == 0:
            return np.zeros((h, w), dtype=bool)
        return np.unpackbits(self.bits, axis=1, count=w).view(np.bool_)

    @property
    def area(self) -> int:
        """Number of foreground pixels."""
        return self._area

    def rows(self, r0: int, r1: int) -> NDArray[np.bool_]:
        """Decoded bool rows ``r0:r1`` of the crop (crop coordinates, clipped), full width."""
        h, w = self.shape
        r0, r1 = max(int(r0), 0), min(int(r1), h)
        if r1 <= r0 or w == 0:
            return np.zeros((max(r1 - r0, 0), w), dtype=bool)
        return np.unpackbits(self.bits[r0:r1], axis=1, count=w).view(np.bool_)

    def paste(self, out: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Write the crop into a (H, W) bool frame ``out`` and return it."""
        h, w = self.shape
        if h and w:
            out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] |= self.data
        return out

    def dense(self, height: int, width: int) -> NDArray[np.bool_]:
        """Return the mask as a (height, width) bool frame."""
        return self.paste(np.zeros((height, width), dtype=bool))

    def contains(self, x: int, y: int) -> bool:
        """Whether pixel (x, y) of the frame is foreground (reads one packed byte)."""
        h, w = self.shape
        cx, cy = int(x) - self.x0, int(y) - self.y0
        if not (0 <= cx < w and 0 <= cy < h):
            return False
        return bool((int(self.bits[cy, cx >> 3]) >> (7 - (cx & 7))) & 1)

    def count_in(self, x0: int, y0: int, x1: int, y1: int) -> int:
        """Foreground pixels inside the frame rectangle ``[x0, x1) x [y0, y1)``.

        Only the crop rows and bytes under the rectangle are decoded.
        """
        h, w = self.shape
        cx0, cx1 = max(int(x0) - self.x0, 0), min(int(x1) - self.x0, w)
        cy0, cy1 = max(int(y0) - self.y0, 0), min(int(y1) - self.y0, h)
        if cx1 <= cx0 or cy1 <= cy0:
            return 0
        if cx0 == 0 and cx1 == w and cy0 == 0 and cy1 == h:
            return self._area
        b0, b1 = cx0 >> 3, (cx1 + 7) >> 3
        sub = np.unpackbits(self.bits[cy0:cy1, b0:b1], axis=1)
        return int(np.count_nonzero(sub[:, cx0 - 8 * b0 : cx1 - 8 * b0]))


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
        track_id: (N,) int64 id of each mask's track across frames (:mod:`edge.track`); -1
            when not tracking, or while the mask's track is not confirmed. ``None`` at
            construction means all -1.
        class_id: (N,) int64 index of each mask's word in :attr:`names` (open-vocabulary
            bundles); -1 for a class-agnostic mask (FastSAM: all -1). ``None`` at construction
            means all -1.
        names: The vocabulary ``class_id`` indexes (empty for FastSAM).
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    crops: tuple[MaskCrop, ...]
    image_hw: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    data: dict[str, NDArray[Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    track_id: NDArray[np.int64] = None  # type: ignore[assignment]  # None -> all -1
    class_id: NDArray[np.int64] = None  # type: ignore[assignment]  # None -> all -1
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.crops)
        self.crops = tuple(self.crops)
        if self.track_id is None:
            self.track_id = np.full(n, -1, dtype=np.int64)
        self.track_id = np.asarray(self.track_id, dtype=np.int64)
        if self.track_id.shape != (n,):
            raise ValueError(f"track_id must have shape ({n},), got {self.track_id.shape}")
        self.names = tuple(self.names)
        if self.class_id is None:
            self.class_id = np.full(n, -1, dtype=np.int64)
        self.class_id = np.asarray(self.class_id, dtype=np.int64)
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")
        if n and self.class_id.max() >= len(self.names):
            raise ValueError(
                f"class_id {int(self.class_id.max())} is out of range for {len(self.names)} names"
            )
        if self.xyxy.shape != (n, 4):
            raise ValueError(f"xyxy must have shape ({n}, 4), got {self.xyxy.shape}")
        if self.confidence.shape != (n,):
            raise ValueError(f"confidence must have shape ({n},), got {self.confidence.shape}")
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] must have length {n}, got {len(value)}")

    @classmethod
    def empty(cls, height: int, width: int, names: Sequence[str] = ()) -> Masks:
        """A result with no masks for a (height, width) frame (``names``: its vocabulary)."""
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            crops=(),
            image_hw=(height, width),
            names=tuple(names),
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
            track_id=self.track_id[idx],
            class_id=self.class_id[idx],
            names=self.names,
        )

    @property
    def labels(self) -> list[str | None]:
        """Each mask's word (``None`` for a class-agnostic mask)."""
        return [self.names[c] if c >= 0 else None for c in self.class_id.tolist()]

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
