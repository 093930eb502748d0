"""The JSON result schema shared by ``fastsam-edge segment`` and the service."""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.bundle import BundleManifest
from edge.encode import Contours, encode_rles, mask_to_polygons
from edge.types import Masks

RESULT_SCHEMA_VERSION = 1


def bundle_facts(segmenter: object) -> dict[str, Any]:
    """The result's ``bundle``: ``{"name", "sha256", "precision"}`` of a segmenter loaded from
    a bundle (its ``manifest`` and ``precision``); only the class name for another one (a
    segmenter an embedding program hands to the service)."""
    manifest = getattr(segmenter, "manifest", None)
    precision = getattr(segmenter, "precision", None)
    if not isinstance(manifest, BundleManifest) or not isinstance(precision, str):
        return {"name": type(segmenter).__name__}
    name = manifest.detector_file(precision)
    return {"name": manifest.name, "sha256": manifest.files[name].sha256, "precision": precision}


def result_to_dict(
    result: Masks,
    bundle: dict[str, Any] | None = None,
    frame_id: int | str | None = None,
    trigger: str | None = None,
    prompt: Any = None,
    polygon_epsilon: float = 0.0,
    source: str | None = None,
    encodings: bool = True,
    contours: Sequence[Contours] | None = None,
) -> dict[str, Any]:
    """Serialise a result to the JSON-able result schema (version 1).

    Args:
        result: Segmentation result.
        bundle: ``{"name", "sha256", "precision"}`` of the model that produced it.
        frame_id: Frame counter or id (service), else ``None``.
        trigger: What triggered the frame (service), else ``None``.
        prompt: The prompt(s) applied, JSON-able; default ``result.metadata["prompt"]`` (set by
            ``Segmenter.segment`` when prompts were given), else ``None``. Prompted results
            also carry a per-mask ``prompt_index`` (from ``result.data``).
        polygon_epsilon: Douglas-Peucker tolerance of the polygons in pixels.
        source: Image path or source name, if any.
        encodings: Include each mask's ``rle`` and ``polygons`` (the costly part); False
            gives the summary fields only (for a consumer that does not read the masks).
        contours: Each mask's :func:`~edge.encode.mask_contours`, if already computed.

    Returns:
        A dictionary with ``schema_version``, ``timestamp``, ``frame_id``, ``trigger``,
        ``prompt``, ``image``, ``bundle``, ``thresholds``, ``timings`` and ``masks`` (each with
        ``id``, ``score``, ``bbox_xyxy``, ``area``, ``class_id`` and ``label`` (the
        vocabulary word; -1 and ``None`` on class-agnostic bundles), ``rle`` (COCO compressed)
        and ``polygons`` (the last two only with ``encodings``), ``track_id`` when the result
        was tracked (``result.metadata["tracking"]``), plus ``prompt_index`` and, for text
        prompts, ``clip_similarity`` / ``clip_probability``). Prompted results add
        ``prompt_notes`` (why a prompt selected nothing) and, for text prompts, ``text_scores``
        (each text prompt's best match, selected or not).
    """
    if prompt is None:
        prompt = result.metadata.get("prompt")
    h, w = result.image_hw
    masks: list[dict[str, Any]] = []
    rles = encode_rles(result.crops, h, w) if encodings else []
    track_ids = result.track_id.tolist() if result.metadata.get("tracking") else None
    scores = [round(v, 6) for v in result.confidence.tolist()]
    boxes = [[round(v, 3) for v in box] for box in result.xyxy.tolist()]
    class_ids = result.class_id.tolist()
    labels = result.labels
    for i, crop in enumerate(result.crops):
        entry: dict[str, Any] = {
            "id": i,
            "score": scores[i],
            "bbox_xyxy": boxes[i],
            "area": crop.area,
            "class_id": class_ids[i],
            "label": labels[i],
        }
        if track_ids is not None:
            entry["track_id"] = track_ids[i]
        if encodings:
            entry["rle"] = rles[i]
            traced = contours[i] if contours is not None else None
            entry["polygons"] = mask_to_polygons(crop, polygon_epsilon, traced)
        for key, values in result.data.items():
            value = np.asarray(values)[i]
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float):
                if math.isnan(value):  # e.g. clip_similarity of a mask a point selected
                    continue
                value = round(value, 6)
            entry[key] = value
        masks.append(entry)
    image: dict[str, Any] = {"width": w, "height": h}
    if source is not None:
        image["source"] = source
    doc: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "frame_id": frame_id,
        "trigger": trigger,
        "prompt": prompt,
        "image": image,
        "bundle": bundle or {},
        "thresholds": result.metadata.get("thresholds", {}),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "num_masks": len(result),
        "vocabulary": list(result.names),
        "masks": masks,
    }
    if "prompt_notes" in result.metadata:
        doc["prompt_notes"] = list(result.metadata["prompt_notes"])
    if "text_scores" in result.metadata:
        doc["text_scores"] = list(result.metadata["text_scores"])
    return doc


def add_encodings(doc: dict[str, Any], result: Masks, polygon_epsilon: float = 0.0) -> None:
    """Fill ``rle`` and ``polygons`` into a document made with ``encodings=False`` (in place).

    Lets a caller defer the costly encodings until someone reads them (e.g. ``GET /latest``).

    Raises:
        ValueError: The document's masks are not the result's.
    """
    masks = doc["masks"]
    if len(masks) != len(result):
        raise ValueError(f"add_encodings: {len(masks)} masks in the document, {len(result)} given")
    h, w = result.image_hw
    for entry, crop, rle in zip(masks, result.crops, encode_rles(result.crops, h, w), strict=True):
        entry["rle"] = rle
        entry["polygons"] = mask_to_polygons(crop, polygon_epsilon)
