"""Point, box and text prompts: the types, the JSON prompt schema and validation.

A prompt is data: :class:`PointPrompt` (clicks with 0/1 labels and a point ``mode``),
:class:`BoxPrompt` (``x1, y1, x2, y2`` boxes) or :class:`TextPrompt` (a description and an
optional CLIP similarity threshold), all in source pixels. :func:`parse_prompts` builds them
from JSON (``docs/prompts.md``), :func:`validate_prompt` checks them (once without and once with
the frame size) and raises :class:`~edge.errors.InputError` naming the field and the value.

What a prompt *selects* on one frame's detections (the ultralytics 8.4.190 rules, the lazy
search, CLIP text matching) is :mod:`edge.selection`.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge.errors import InputError

PointMode = Literal["reference", "official", "best"]
POINT_MODES: tuple[str, ...] = ("reference", "official", "best")
MAX_TEXT_CHARS = 1000
"""Longest accepted text prompt (CLIP's tokenizer keeps only 77 tokens anyway)."""


def json_number(v: float) -> float | int:
    """A JSON-friendly number: integral floats become ints."""
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxstring, _SHOW.maxother = 3, 8, 60, 60


def show(value: Any) -> str:
    """A bounded ``repr`` for error messages (a 100000-deep list must not recurse)."""
    return _SHOW.repr(value)


def _is_number(v: Any) -> bool:
    """int/float (numpy's too), but not bool: ``true`` is not a coordinate or a label."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _check_numbers(value: Any, name: str, width: int) -> None:
    """``value`` is [n, ...] or [[n, ...], ...] of plain numbers (no strings, bools, deeper
    nesting), checked before numpy would coerce ``"1"`` or ``true`` to 1.0."""
    shape = "[x, y]" if width == 2 else "[x1, y1, x2, y2]"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise InputError(f"{name}: expected numbers, got a {value.dtype} array")
        return
    if not isinstance(value, list | tuple):
        raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
    rows = value if value and isinstance(value[0], list | tuple | np.ndarray) else [value]
    for row in rows:
        if isinstance(row, np.ndarray) and row.dtype.kind in "iuf":
            continue
        if not isinstance(row, list | tuple):
            raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
        for v in row:
            if not _is_number(v):
                raise InputError(f"{name}: coordinates must be numbers, got {show(v)}")


def _as_float_array(value: Any, name: str, width: int) -> NDArray[np.float64]:
    _check_numbers(value, name, width)
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected numbers, got {show(value)}") from exc
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        shape = "[x, y]" if width == 2 else "[x1, y1, x2, y2]"
        raise InputError(f"{name}: expected {shape} or a list of them, got {show(value)}")
    return arr


@dataclass(frozen=True, eq=False)
class PointPrompt:
    """Clicks on the image, in source pixels.

    Attributes:
        points: (K, 2) float64 ``x, y`` (column, row) coordinates.
        labels: (K,) labels, 1 = foreground, 0 = background (checked by :func:`validate_prompt`).
        mode: ``"reference"`` (UL-new, separate masks), ``"official"`` (FastSAM repository, one
            merged mask) or ``"best"`` (the smallest mask satisfying the reference rule).
    """

    points: NDArray[np.float64]
    labels: NDArray[Any]
    mode: PointMode = "reference"

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", _as_float_array(self.points, "point", 2))
        labels = self.labels
        if labels is None:
            labels = np.ones(len(self.points), dtype=np.int64)
        elif isinstance(labels, list | tuple):
            for i, v in enumerate(labels):
                if not (_is_number(v) or isinstance(v, str)):  # strings: validate_prompt says
                    raise InputError(f"label[{i}]: expected 0 or 1, got {show(v)}")
        elif isinstance(labels, np.ndarray) and labels.ndim == 0:
            labels = [labels.item()] * len(self.points)
        elif not isinstance(labels, np.ndarray):
            labels = [labels] * len(self.points)
        try:
            arr = np.array(labels)
        except (TypeError, ValueError) as exc:  # ragged
            raise InputError(f"label: expected 0/1 integers, got {show(labels)}") from exc
        if arr.ndim != 1:
            raise InputError(f"label: expected a flat list of 0/1, got {show(labels)}")
        object.__setattr__(self, "labels", arr)

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        return {
            "type": "point",
            "data": [[json_number(x), json_number(y)] for x, y in self.points],
            "label": [v if isinstance(v, str) else json_number(v) for v in self.labels.tolist()],
            "mode": self.mode,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PointPrompt) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))


@dataclass(frozen=True, eq=False)
class BoxPrompt:
    """Boxes in source pixels, ``x1, y1, x2, y2``; each selects its best-IoU mask.

    Attributes:
        xyxy: (M, 4) float64 boxes.
    """

    xyxy: NDArray[np.float64]

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", _as_float_array(self.xyxy, "box", 4))

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        return {"type": "box", "data": [[json_number(v) for v in b] for b in self.xyxy]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoxPrompt) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))


@dataclass(frozen=True)
class TextPrompt:
    """A text description; selects the mask whose CLIP image embedding matches it best.

    Attributes:
        text: The description (1..1000 characters, not only whitespace).
        threshold: Minimum cosine similarity of the best mask; below it the prompt selects
            nothing. ``None``: the segmenter's default (the bundle's ``clip.text_threshold``,
            if measured). Scales differ per CLIP model, so calibrate per bundle.
    """

    text: str
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The prompt in the JSON prompt schema."""
        out: dict[str, Any] = {"type": "text", "data": self.text}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


Prompt = PointPrompt | BoxPrompt | TextPrompt
"""Any prompt type."""

_PROMPT_KEYS = {
    "point": {"type", "data", "label", "mode"},
    "box": {"type", "data"},
    "text": {"type", "data", "threshold"},
}


def parse_prompts(obj: Any) -> list[Prompt]:
    """Build prompts from the JSON prompt schema.

    Schema: a list (or one object) of ``{"type": "point", "data": [x, y] | [[x, y], ...],
    "label": 0 | 1 | [0/1, ...], "mode": "reference" | "official" | "best"}`` (``label``
    default 1, ``mode`` default ``"reference"``), ``{"type": "box", "data": [x1, y1, x2, y2] |
    [[...], ...]}`` or ``{"type": "text", "data": "a red circle", "threshold": 0.2}``
    (``threshold`` optional). Frame-independent checks
    of :func:`validate_prompt` are applied; frame bounds are checked later.

    Raises:
        InputError: Naming the entry, field and bad value.
    """
    if isinstance(obj, Mapping):
        obj = [obj]
    if not isinstance(obj, list | tuple):
        raise InputError(f"prompts: expected an object or a list of objects, got {show(obj)}")
    out: list[Prompt] = []
    for i, entry in enumerate(obj):
        where = f"prompts[{i}]"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: expected an object, got {show(entry)}")
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in _PROMPT_KEYS:
            raise InputError(
                f"{where}.type: expected one of {sorted(_PROMPT_KEYS)}, got {show(kind)}"
            )
        unknown = sorted(set(entry) - _PROMPT_KEYS[kind])
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {unknown} for a {kind} prompt "
                f"(allowed: {sorted(_PROMPT_KEYS[kind])})"
            )
        if "data" not in entry:
            raise InputError(f"{where}.data: missing")
        data = entry["data"]
        try:
            prompt: Prompt
            if kind == "point":
                prompt = PointPrompt(data, entry.get("label", 1), entry.get("mode", "reference"))
            elif kind == "box":
                prompt = BoxPrompt(data)
            else:
                prompt = TextPrompt(data, entry.get("threshold"))
            validate_prompt(prompt, None)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        out.append(prompt)
    return out


def validate_prompt(prompt: Any, image_hw: tuple[int, int] | None) -> None:
    """Check a prompt; ``image_hw=None`` skips the checks that need the frame size.

    Raises:
        InputError: Naming the field (``point``, ``label``, ``mode``, ``box``, ``text``,
            ``type``) and the bad value.
    """
    if isinstance(prompt, PointPrompt):
        _validate_points(prompt, image_hw)
    elif isinstance(prompt, BoxPrompt):
        _validate_boxes(prompt, image_hw)
    elif isinstance(prompt, TextPrompt):
        text = prompt.text
        if not isinstance(text, str):
            raise InputError(f"text: expected a string, got {show(text)}")
        if not text.strip():
            raise InputError(f"text: empty or whitespace-only text {text!r}")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(
                f"text: {len(text)} characters, at most {MAX_TEXT_CHARS} allowed "
                f"(starts {text[:40]!r})"
            )
        th = prompt.threshold
        if th is not None and (
            isinstance(th, bool) or not isinstance(th, int | float) or not -1.0 <= th <= 1.0
        ):
            raise InputError(f"threshold: expected a cosine similarity in [-1, 1], got {th!r}")
    else:
        raise InputError(
            f"type: expected a PointPrompt, BoxPrompt or TextPrompt, got {type(prompt).__name__} "
            f"{prompt!r}"
        )


def _validate_points(p: PointPrompt, image_hw: tuple[int, int] | None) -> None:
    if p.mode not in POINT_MODES:
        raise InputError(f"mode: expected one of {list(POINT_MODES)}, got {show(p.mode)}")
    pts, labels = p.points, p.labels
    if len(pts) == 0:
        raise InputError("point: no points given")
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"point[{i}]: coordinates must be finite, got ({x}, {y})")
    if len(labels) != len(pts):
        raise InputError(
            f"label: {len(labels)} label(s) {labels.tolist()} for {len(pts)} point(s)"
        )
    for i, v in enumerate(labels.tolist()):
        if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
            raise InputError(f"label[{i}]: expected 0 or 1, got {v!r}")
    if image_hw is not None:
        h, w = image_hw
        for i, (x, y) in enumerate(pts):
            if x < 0 or y < 0 or x >= w or y >= h:
                raise InputError(
                    f"point[{i}]: ({json_number(x)}, {json_number(y)}) is off the {w}x{h} frame "
                    f"(need 0 <= x < {w}, 0 <= y < {h})"
                )


def _validate_boxes(p: BoxPrompt, image_hw: tuple[int, int] | None) -> None:
    if len(p.xyxy) == 0:
        raise InputError("box: no boxes given")
    for i, b in enumerate(p.xyxy):
        shown = [json_number(v) for v in b]
        if not np.isfinite(b).all():
            raise InputError(f"box[{i}]: coordinates must be finite, got {shown}")
        x1, y1, x2, y2 = b
        if x2 <= x1 or y2 <= y1:
            raise InputError(f"box[{i}]: inverted or empty box {shown} (need x2 > x1, y2 > y1)")
        if image_hw is None:
            continue
        h, w = image_hw
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            raise InputError(f"box[{i}]: {shown} lies entirely outside the {w}x{h} frame")
        c = pixel_box(b, image_hw)
        if c[2] <= c[0] or c[3] <= c[1]:
            raise InputError(
                f"box[{i}]: {shown} is empty after truncation to whole pixels {c.tolist()}"
            )


def pixel_box(b: NDArray[np.float64], image_hw: tuple[int, int]) -> NDArray[np.int64]:
    """A (4,) box truncated toward zero (``int32`` cast) and clipped to the frame, like the
    reference: the integer box that validation checks and selection measures."""
    h, w = image_hw
    c = np.trunc(b).astype(np.int64)
    c[[0, 2]] = c[[0, 2]].clip(0, w)
    c[[1, 3]] = c[[1, 3]].clip(0, h)
    return c


def as_prompt_list(prompt: Any) -> list[Prompt]:
    """Normalise ``None`` / one prompt / a sequence of prompts to a list (type-checked)."""
    if prompt is None:
        return []
    items = [prompt] if isinstance(prompt, PointPrompt | BoxPrompt | TextPrompt) else prompt
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise InputError(
            f"prompt: expected a Prompt or a list of prompts, got {type(prompt).__name__} "
            f"{prompt!r} (use edge.prompts.parse_prompts for JSON)"
        )
    out = list(items)
    for i, p in enumerate(out):
        if not isinstance(p, PointPrompt | BoxPrompt | TextPrompt):
            raise InputError(
                f"prompt[{i}]: type: expected a PointPrompt, BoxPrompt or TextPrompt, "
                f"got {type(p).__name__} {p!r}"
            )
    return out


class CheckedPrompts(tuple):  # type: ignore[type-arg]
    """Prompts already validated against one frame size (what :func:`check_prompts` returns).

    Checking them again for the same size returns them as they are, so a prompt that entered
    at an edge (the CLI, ``POST /prompt``) is validated there once, not again at every layer.

    Attributes:
        image_hw: The (height, width) they were checked against.
    """

    image_hw: tuple[int, int]

    def __new__(cls, prompts: Sequence[Prompt], image_hw: tuple[int, int]) -> CheckedPrompts:
        obj = super().__new__(cls, prompts)
        obj.image_hw = (int(image_hw[0]), int(image_hw[1]))
        return obj


def check_prompts(prompt: Any, image_hw: tuple[int, int]) -> CheckedPrompts:
    """The prompts of one frame, each validated against the frame size (once: prompts checked
    for this size already are returned as they are).

    Args:
        prompt: ``None``, one prompt, a sequence of prompts (:func:`as_prompt_list`) or
            :class:`CheckedPrompts`.
        image_hw: (height, width) of the frame.

    Raises:
        InputError: Not prompts, or a prompt that does not fit the frame (naming the field).
    """
    hw = (int(image_hw[0]), int(image_hw[1]))
    if isinstance(prompt, CheckedPrompts) and prompt.image_hw == hw:
        return prompt
    prompts = as_prompt_list(prompt)
    for p in prompts:
        validate_prompt(p, hw)
    return CheckedPrompts(prompts, hw)


def describe(p: Prompt) -> str:
    """A short human name of a prompt for messages (``point (3, 4) negative``, ``box [..]``)."""
    if isinstance(p, PointPrompt):
        pts = ", ".join(
            f"({json_number(x)}, {json_number(y)}){'' if lab == 1 else ' negative'}"
            for (x, y), lab in zip(p.points.tolist(), p.labels, strict=True)
        )
        return f"point {pts}"
    if isinstance(p, BoxPrompt):
        return "box " + ", ".join(str([json_number(v) for v in b]) for b in p.xyxy.tolist())
    return f"text {p.text!r}"
