"""Overlay drawing with OpenCV only (no matplotlib on the Pi).

Every step works in the masks' crops: the cost follows the masks' area, not the frame's. The
steps are separate functions over the output image (:func:`paint_masks`, :func:`draw_contours`,
:func:`draw_boxes`, :func:`draw_labels`) so that callers can add their own marks (e.g. prompt
points) on top of :func:`draw_overlay`'s result.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.encode import Contours, mask_contours
from edge.types import Masks

LABEL_KINDS = ("id", "score", "id+score")
"""What :func:`draw_labels` can write next to each mask."""


def mask_colors(n: int, seed: int = 0) -> NDArray[np.uint8]:
    """(n, 3) uint8 BGR colours, vivid and reproducible (golden-ratio hue walk)."""
    return _walk_colors(np.arange(n), seed)


def _walk_colors(index: NDArray[np.integer], seed: int = 0) -> NDArray[np.uint8]:
    """(n, 3) uint8 BGR: colour number ``index[k]`` of the golden-ratio hue walk."""
    n = len(index)
    if n == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    hues = ((index * 0.618033988749895 + seed * 0.1) % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


UNTRACKED_COLOR = (160, 160, 160)
"""BGR colour of a mask whose track is not confirmed yet (tracked results)."""


def track_colors(track_id: NDArray[np.integer]) -> NDArray[np.uint8]:
    """(n, 3) uint8 BGR colour per track id: the same id always gets the same colour (so
    masks do not change colour from frame to frame), -1 gets :data:`UNTRACKED_COLOR`."""
    ids = np.asarray(track_id, dtype=np.int64).reshape(-1)
    out = np.empty((ids.size, 3), dtype=np.uint8)
    out[:] = UNTRACKED_COLOR
    known = ids >= 0
    out[known] = _walk_colors(ids[known])
    return out


def result_colors(result: Masks) -> NDArray[np.uint8]:
    """(N, 3) uint8 BGR colour per mask: by track id for tracked results
    (``metadata["tracking"]``), by position otherwise."""
    if result.metadata.get("tracking"):
        return track_colors(result.track_id)
    return mask_colors(len(result))


def _blend_lut(color: NDArray[np.uint8], alpha: float) -> NDArray[np.uint8]:
    """(256, 1, 3) table: source value -> ``source * (1 - alpha) + color * alpha``, truncated.

    The arithmetic (float64 source term, float32 colour term) is the one the frame-sized float
    blend used, so the table gives the same bytes.
    """
    src = np.arange(256, dtype=np.uint8)[:, None] * (1 - alpha)
    layer = color[None, :].astype(np.float32) * alpha
    return (src + layer).astype(np.uint8).reshape(256, 1, 3)


def paint_masks(
    out: NDArray[np.uint8],
    image_bgr: NDArray[np.uint8],
    result: Masks,
    colors: NDArray[np.uint8],
    alpha: float = 0.6,
) -> None:
    """Blend each mask's colour into ``out``, in its crop only.

    Masks are painted largest first so smaller ones stay visible on top (FastSAM's display
    order); a pixel takes the blend of the *source* pixel with the colour of the last mask
    painted over it (overlaps do not compound).

    Args:
        out: (H, W, 3) uint8 image written in place (usually a copy of ``image_bgr``).
        image_bgr: The source image the blend reads.
        result: The masks.
        colors: (N, 3) uint8 BGR colour per mask.
        alpha: Mask opacity.
    """
    for i in np.argsort(-result.area, kind="stable"):
        crop = result.crops[i]
        h, w = crop.shape
        if not h or not w:
            continue
        region = (slice(crop.y0, crop.y0 + h), slice(crop.x0, crop.x0 + w))
        blended = cv2.LUT(image_bgr[region], _blend_lut(colors[i], alpha))
        dst = out[region]
        mask = crop.data.view(np.uint8)  # decoded from the packed bits, this crop only
        # OpenCV writes into the view (several times faster than numpy's masked copy)
        written = cv2.copyTo(blended, mask, dst)
        if not np.may_share_memory(written, out):
            dst[...] = written


def draw_contours(
    out: NDArray[np.uint8],
    result: Masks,
    color: tuple[int, int, int] = (255, 255, 255),
    contours: Sequence[Contours] | None = None,
) -> None:
    """Outline every mask (outer contours, traced in the crop, drawn anti-aliased).

    Args:
        out: (H, W, 3) uint8 image written in place.
        result: The masks.
        color: BGR outline colour.
        contours: Each mask's :func:`~edge.encode.mask_contours`, if already computed.
    """
    for i, crop in enumerate(result.crops):
        cs = mask_contours(crop) if contours is None else contours[i]
        if cs:
            cv2.drawContours(out, cs, -1, color, 1, cv2.LINE_AA, offset=(crop.x0, crop.y0))


def draw_boxes(out: NDArray[np.uint8], result: Masks, colors: NDArray[np.uint8]) -> None:
    """Each mask's detection box in its colour."""
    for i, (x1, y1, x2, y2) in enumerate(result.xyxy):
        color = tuple(int(c) for c in colors[i])
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), color, 1)


def label_texts(result: Masks, kind: str) -> list[str]:
    """The text of each mask's label: ``"3"``, ``"0.87"`` or ``"3 0.87"`` (tracked results:
    the track id, ``"#7"``, or ``"#-"`` before the track is confirmed), with the mask's word
    after the id on open-vocabulary results (``"3 dog 0.87"``).

    Raises:
        ValueError: ``kind`` is not one of :data:`LABEL_KINDS`.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"labels: expected one of {list(LABEL_KINDS)}, got {kind!r}")
    scores = result.confidence.tolist()
    tracked = bool(result.metadata.get("tracking"))
    track_ids = result.track_id.tolist()
    words = result.labels
    texts = []
    for i, score in enumerate(scores):
        ident = (f"#{track_ids[i]}" if track_ids[i] >= 0 else "#-") if tracked else str(i)
        parts = [ident] if "id" in kind else []
        parts += [words[i]] if words[i] is not None else []
        parts += [f"{score:.2f}"] if "score" in kind else []
        texts.append(" ".join(parts))
    return texts


def draw_labels(
    out: NDArray[np.uint8],
    result: Masks,
    texts: Sequence[str],
    colors: NDArray[np.uint8],
    scale: float | None = None,
) -> None:
    """Write a text per mask at its box's top-left corner, on a filled tag of its colour.

    Args:
        out: (H, W, 3) uint8 image written in place.
        result: The masks (their boxes place the tags).
        texts: One string per mask (empty: no tag).
        colors: (N, 3) uint8 BGR colour per mask (the tag's background).
        scale: Font scale (default: from the frame height, readable from 480 to 2160 rows).

    Raises:
        ValueError: Not one text per mask.
    """
    if len(texts) != len(result):
        raise ValueError(f"labels: expected {len(result)} texts (one per mask), got {len(texts)}")
    img_h, img_w = out.shape[:2]
    scale = scale or max(0.4, img_h / 1200)
    thickness = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, text in enumerate(texts):
        if not text:
            continue
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        x1, y1 = int(result.xyxy[i, 0]), int(result.xyxy[i, 1])
        # keep the tag inside the frame
        x = min(max(x1, 0), max(img_w - tw - 2, 0))
        y = min(max(y1, th + base + 2), img_h - 1)
        color = tuple(int(c) for c in colors[i])
        cv2.rectangle(out, (x, y - th - base - 2), (x + tw + 2, y), color, cv2.FILLED)
        # dark text on light colours, white on dark ones
        ink = (0, 0, 0) if int(colors[i].astype(int) @ [29, 150, 77]) > 128 * 256 else (255,) * 3
        cv2.putText(out, text, (x + 1, y - base - 1), font, scale, ink, thickness, cv2.LINE_AA)


def draw_overlay(
    image_bgr: NDArray[np.uint8],
    result: Masks,
    alpha: float = 0.6,
    contours: bool = True,
    boxes: bool = False,
    labels: str | Sequence[str] | None = None,
    traced: Sequence[Contours] | None = None,
) -> NDArray[np.uint8]:
    """Paint the masks over the image.

    Masks are painted largest first so smaller ones stay visible on top (FastSAM's display
    order), each in its own colour at ``alpha`` (tracked results: its track's colour, the
    same on every frame), with contours. Only the masks' crops are
    touched: the cost follows the masks, not the frame size.

    Args:
        image_bgr: (H, W, 3) uint8 BGR source image.
        result: Result for this image.
        alpha: Mask opacity.
        contours: Draw mask outlines.
        boxes: Draw the detection boxes.
        labels: Tag each mask: ``"id"``, ``"score"``, ``"id+score"``, or one string per mask;
            ``None`` tags open-vocabulary results with their words and scores (``"score"``)
            and leaves class-agnostic ones untagged.
        traced: Each mask's :func:`~edge.encode.mask_contours`, if already computed (the
            service traces them once for the polygons and the outlines).

    Returns:
        (H, W, 3) uint8 BGR overlay (a new array).

    Raises:
        ValueError: Unknown label kind, or not one label per mask.
    """
    out = image_bgr.copy()
    if len(result) == 0:
        return out
    colors = result_colors(result)
    paint_masks(out, image_bgr, result, colors, alpha)
    if contours:
        draw_contours(out, result, contours=traced)
    if boxes:
        draw_boxes(out, result, colors)
    if labels is None and bool((result.class_id >= 0).any()):
        labels = "score"
    if labels is not None:
        texts = label_texts(result, labels) if isinstance(labels, str) else list(labels)
        draw_labels(out, result, texts, colors)
    return out
