"""COCO formats: detection results for ``pycocotools`` and ground truth of the demo scenes.

FastSAM is class-agnostic, so every mask gets :data:`CATEGORY_ID` (1, ``"object"``). Results
are the list ``COCO.loadRes`` reads: ``image_id``, ``category_id``, ``bbox`` (``x, y, w, h`` in
pixels), ``score``, ``segmentation`` (compressed RLE ``{"size": [h, w], "counts": str}``) and
``area``, plus ``attributes: {"track_id": n}`` for tracked results; nothing here needs
pycocotools.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.encode import encode_rle, rle_counts, rle_string

if TYPE_CHECKING:
    from edge.demo.scenes import Scene
    from edge.types import Masks

CATEGORY_ID = 1
"""The one category of class-agnostic masks."""
CATEGORIES: list[dict[str, Any]] = [{"id": CATEGORY_ID, "name": "object", "supercategory": ""}]
"""COCO ``categories`` list of results and ground truth."""


def xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    """``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h]``, rounded to 3 decimals."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)]


def categories(names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """COCO ``categories`` of a vocabulary (id = word index + 1); :data:`CATEGORIES` without."""
    if not names:
        return CATEGORIES
    return [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)]


def masks_to_coco(
    result: Masks, image_id: int | str = 1, category_id: int = CATEGORY_ID
) -> list[dict[str, Any]]:
    """COCO results (one dict per mask) of one frame; see the module docstring.

    Args:
        result: The frame's masks.
        image_id: COCO id of the frame.
        category_id: Category of every class-agnostic mask (a mask with a word, on a YOLOE
            bundle, gets its word's :func:`categories` id, ``class_id + 1``).
    """
    h, w = result.image_hw
    tracked = bool(result.metadata.get("tracking"))
    out = []
    for i, crop in enumerate(result.crops):
        cls = int(result.class_id[i])
        ann: dict[str, Any] = {
            "image_id": image_id,
            "category_id": cls + 1 if cls >= 0 else category_id,
            "bbox": xyxy_to_xywh(result.xyxy[i]),
            "score": round(float(result.confidence[i]), 6),
            "segmentation": encode_rle(crop, h, w),
            "area": crop.area,
        }
        if tracked:  # CVAT's convention for per-object extras; pycocotools ignores it
            ann["attributes"] = {"track_id": int(result.track_id[i])}
        out.append(ann)
    return out


def coco_image(image_id: int | str, file_name: str, height: int, width: int) -> dict[str, Any]:
    """One entry of a COCO ``images`` list."""
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def scenes_to_coco(scenes: Iterable[Scene], file_names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth (instances) of demo scenes, image ids 1..N in the given order.

    Args:
        scenes: Scenes from :mod:`edge.demo.scenes`.
        file_names: File name of each scene's image (same order).

    Returns:
        A COCO dataset dict (``images``, ``annotations``, ``categories``) that
        ``pycocotools.coco.COCO`` loads; each instance's ``segmentation`` is its visible mask
        as compressed RLE, ``bbox`` its tight box, ``iscrowd`` 0, plus ``color``/``shape``.
    """
    images, anns = [], []
    names = list(file_names)
    for k, scene in enumerate(scenes):
        image_id = k + 1
        images.append(coco_image(image_id, names[k], scene.height, scene.width))
        for j in range(len(scene)):
            mask = scene.masks[j]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_ID,
                    "bbox": xyxy_to_xywh(scene.xyxy[j]),
                    "area": int(np.count_nonzero(mask)),
                    "iscrowd": 0,
                    "segmentation": {
                        "size": [scene.height, scene.width],
                        "counts": rle_string(rle_counts(mask)),
                    },
                    "color": scene.colors[j],
                    "shape": scene.shapes[j],
                }
            )
    if len(images) != len(names):
        raise ValueError(f"scenes_to_coco: {len(images)} scenes but {len(names)} file names")
    return {"images": images, "annotations": anns, "categories": CATEGORIES}
