"""Prompt marks on overlays (``edge.marks``): points with their label, boxes, texts."""

from __future__ import annotations

import numpy as np
import pytest

from edge.marks import draw_prompt_marks, overlay_with_prompts
from edge.overlay import draw_overlay
from edge.prompts import BoxPrompt, PointPrompt, TextPrompt
from edge.types import MaskCrop, Masks


def _result() -> Masks:
    crop = MaskCrop(np.ones((20, 30), bool), 40, 30)
    return Masks(np.array([[40, 30, 70, 50]], np.float32), np.array([0.9], np.float32), (crop,),
                 (120, 160))  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "region", "colour"),
    [
        (PointPrompt([[100, 90]], [1]), (slice(80, 100), slice(90, 110)), (60, 220, 60)),
        (PointPrompt([[100, 90]], [0]), (slice(80, 100), slice(90, 110)), (60, 60, 230)),
        (BoxPrompt([10, 60, 50, 100]), (slice(60, 61), slice(15, 45)), (255, 200, 0)),
        (TextPrompt("a red mug"), (slice(0, 20), slice(0, 80)), (255, 255, 255)),
    ],
)
def test_each_prompt_kind_is_marked(prompt, region, colour) -> None:  # noqa: ANN001
    image = np.full((120, 160, 3), 90, np.uint8)
    out = draw_prompt_marks(image.copy(), [prompt])
    patch = out[region].reshape(-1, 3).astype(int)
    # anti-aliased glyphs of a small caption may not reach the full colour in every OpenCV
    # release (4.11, the Pi's, tops out a few levels short): within 8 levels counts
    near = (np.abs(patch - np.array(colour)) <= 8).all(axis=1)
    assert near.any(), np.unique(patch, axis=0)
    assert not (np.abs(image[region].reshape(-1, 3).astype(int) - colour) <= 8).all(axis=1).any()


def test_overlay_with_prompts_adds_only_the_marks() -> None:
    image = np.full((120, 160, 3), 90, np.uint8)
    res = _result()
    plain = draw_overlay(image, res)
    assert (overlay_with_prompts(image, res, None) == plain).all()
    assert (overlay_with_prompts(image, res, []) == plain).all()
    marked = overlay_with_prompts(image, res, [PointPrompt([[100, 90]], [1])])
    changed = np.argwhere((marked != plain).any(axis=2))
    assert len(changed) and changed[:, 0].min() >= 70 and changed[:, 1].min() >= 80
