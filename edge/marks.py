"""Prompt marks drawn on top of an overlay (OpenCV only; mask labels: ``edge.overlay``).

Prompt marks show what was asked: each point as a ring with its label (``+`` foreground,
``-`` background), each box as a rectangle, each text as a caption. They are drawn for every
prompted result, so an empty result still shows where the click was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

_POS = (60, 220, 60)  # BGR green: foreground point
_NEG = (60, 60, 230)  # BGR red: background point
_BOX = (255, 200, 0)  # BGR cyan-ish: box prompt
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _scale(image: NDArray[np.uint8]) -> tuple[float, int]:
    """Font scale and line thickness that stay legible from 160 px to 4K."""
    s = max(min(image.shape[:2]) / 640.0, 0.7)
    return 0.5 * s, max(1, round(1.5 * s))


def _text(
    image: NDArray[np.uint8],
    text: str,
    org: tuple[int, int],
    color: tuple[int, int, int],
    font_scale: float,
    thick: int,
) -> None:
    """Text with a dark backing box, kept inside the frame."""
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, thick)
    h, w = image.shape[:2]
    x = int(min(max(org[0], 0), max(w - tw - 2, 0)))
    y = int(min(max(org[1], th + 2), h - base - 1))
    cv2.rectangle(image, (x - 1, y - th - 2), (x + tw + 1, y + base), (0, 0, 0), -1)
    cv2.putText(image, text, (x, y), _FONT, font_scale, color, thick, cv2.LINE_AA)


def draw_prompt_marks(image: NDArray[np.uint8], prompts: Sequence[Any]) -> NDArray[np.uint8]:
    """Draw prompts (``edge.prompts`` objects) in place and return the image.

    Points: a ring with ``+``/``-``; boxes: a rectangle; texts: captions in the top-left corner
    (one line each, in prompt order).
    """
    from edge.prompts import BoxPrompt, PointPrompt, TextPrompt

    fs, thick = _scale(image)
    radius = max(4, int(8 * fs / 0.5))
    line = 0
    for p in prompts:
        if isinstance(p, PointPrompt):
            for (x, y), label in zip(np.asarray(p.points).tolist(), p.labels, strict=True):
                c = (int(x), int(y))
                color = _POS if int(label) == 1 else _NEG
                cv2.circle(image, c, radius, (0, 0, 0), thick + 2, cv2.LINE_8)
                cv2.circle(image, c, radius, color, thick, cv2.LINE_8)
                _text(image, "+" if int(label) == 1 else "-", (c[0] + radius, c[1]), color, fs, 1)
        elif isinstance(p, BoxPrompt):
            for x1, y1, x2, y2 in np.asarray(p.xyxy).tolist():
                cv2.rectangle(
                    image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), _BOX, thick, 8
                )
        elif isinstance(p, TextPrompt):
            line += 1
            (_, th), _ = cv2.getTextSize("Ag", _FONT, fs, thick)
            _text(image, f"text: {p.text[:60]}", (4, line * (th + 8)), (255, 255, 255), fs, thick)
    return image


def overlay_with_prompts(
    image_bgr: NDArray[np.uint8], result: Any, prompts: Sequence[Any] | None, **kw: Any
) -> NDArray[np.uint8]:
    """``edge.overlay.draw_overlay`` (``kw`` passed on) plus the prompts' marks, if any."""
    from edge.overlay import draw_overlay

    out = draw_overlay(image_bgr, result, **kw)
    return draw_prompt_marks(out, prompts) if prompts else out
