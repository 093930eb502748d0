"""Seeded synthetic scenes: the project's "demo world".

Every scene is a muted, textured background with a handful of brightly coloured geometric
objects (circles, squares, stars, ...) drawn on top of each other. The generator returns the
image together with exact ground truth: one *visible* instance mask per object (what is left
of it after occlusion by objects drawn later), its tight box, and its colour and shape names
(for text prompts such as ``"a red circle"``).

Rendering uses only integer rasterisation (``cv2.fillPoly`` / ``cv2.circle`` /
``cv2.ellipse`` with ``cv2.LINE_8``, no anti-aliasing) and objects are painted strictly
through their masks, so a mask is exactly the set of pixels that show its object.

A scene is a pure function of its seed (``np.random.default_rng(seed)``): the same seed
gives the same bytes on a given platform and library version.

Seed convention (keep to it so that evaluation never sees training data):

* ``0 .. N-1``: training scenes (``TRAIN_SEED_START``).
* ``900_000 ..``: validation scenes used during training (``VAL_SEED_START``).
* ``>= 1_000_000``: held-out evaluation, benchmarks and calibration images
  (``EVAL_SEED_START``). Never train on these.

:func:`generate_sequence` moves such objects over a fixed background, frame after frame
(crossing, occluding, entering and leaving), with each object's identity on every frame: the
ground truth of tracking.

This module needs only numpy and OpenCV, so it ships with the edge runtime.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

__all__ = [
    "COLORS",
    "EVAL_SEED_START",
    "SHAPES",
    "TRAIN_SEED_START",
    "VAL_SEED_START",
    "Scene",
    "SequenceFrame",
    "generate_scene",
    "generate_sequence",
    "iter_scenes",
    "save_scenes",
]

TRAIN_SEED_START = 0
VAL_SEED_START = 900_000
EVAL_SEED_START = 1_000_000

#: Named object palette, BGR (OpenCV order). Objects get a small per-object jitter.
COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (40, 30, 215),
        "green": (50, 175, 40),
        "blue": (215, 80, 25),
        "yellow": (30, 220, 235),
        "orange": (15, 130, 250),
        "purple": (160, 40, 130),
        "cyan": (225, 210, 40),
        "white": (245, 245, 245),
        "black": (20, 20, 20),
    }
)

#: Shape kinds the generator draws.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "rectangle",
    "triangle",
    "star",
    "hexagon",
    "ellipse",
)

_BACKGROUNDS = ("noise", "gradient", "stripes", "checkerboard", "blotches")

_MIN_VISIBLE_PX = 60  # an object must keep at least this many visible pixels ...
_MIN_VISIBLE_FRAC = 0.4  # ... and this fraction of its full (unclipped, unoccluded) area
_MIN_NEW_PX = 80  # a freshly placed object must show at least this many in-frame pixels
_MIN_INFRAME_FRAC = 0.6  # objects cut by the border keep at least this fraction inside
_MIN_SIZE_PX = 16.0  # smallest nominal object extent in pixels
_SIZE_BUCKETS = ((0.04, 0.09), (0.09, 0.25), (0.25, 0.45))  # fractions of the short side
_SIZE_BUCKET_P = (0.3, 0.45, 0.25)
_P_REUSE_COLOR = 0.35  # distractors: probability to reuse a colour already in the scene
_P_REUSE_SHAPE = 0.35  # distractors: probability to reuse a shape already in the scene
_P_ALLOW_OVERLAP = 0.35  # probability that a new object may occlude earlier ones
_P_BORDER = 0.12  # probability that an object may be cut by the image border
_PLACE_TRIES = 30
_SHIFT = 4  # fixed-point bits for sub-pixel vertex positions
_ONE = 1 << _SHIFT


@dataclass(frozen=True, eq=False)
class Scene:
    """One synthetic scene with exact ground truth.

    Instances are listed in drawing order (back to front). ``eq=False``: scenes compare by
    identity (numpy fields have no scalar equality); compare ``image`` bytes instead.

    Attributes:
        image: (H, W, 3) uint8 BGR image.
        masks: (K, H, W) bool visible instance masks, pairwise disjoint, each non-empty.
        colors: K colour names, each a key of ``COLORS``.
        shapes: K shape names, each in ``SHAPES``.
        xyxy: (K, 4) float32 tight boxes of the visible masks, ``x1, y1`` inclusive and
            ``x2, y2`` exclusive (``x2 = max column + 1``).
        seed: The seed the scene was generated from.
    """

    image: np.ndarray
    masks: np.ndarray
    colors: tuple[str, ...]
    shapes: tuple[str, ...]
    xyxy: np.ndarray
    seed: int

    def __len__(self) -> int:
        """Number of instances K."""
        return int(self.masks.shape[0])

    @property
    def height(self) -> int:
        """Image height H in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width W in pixels."""
        return int(self.image.shape[1])

    @property
    def prompts(self) -> tuple[str, ...]:
        """Text prompts per instance, e.g. ``("a red circle", "a blue star")``."""
        return tuple(f"a {c} {s}" for c, s in zip(self.colors, self.shapes, strict=True))


@dataclass
class _Placed:
    color: str
    full_area: int
    visible: int


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """A random low-saturation, mid-brightness BGR colour as float32 (3,)."""
    h = rng.uniform(0.0, 180.0)
    s = rng.uniform(0.03, 0.33) * 255.0
    v = rng.uniform(0.30, 0.66) * 255.0
    hsv = np.array([[[h, s, v]]], dtype=np.float32)
    return cv2.cvtColor(hsv.round().astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _rotated_coords(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle: u, v each (H, W) float32."""
    theta = rng.uniform(0.0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    return xs * c + ys * s, -xs * s + ys * c


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1], (H, W) float32, about ``cells`` blobs along the short side."""
    short = min(width, height)
    gw = max(2, round(cells * width / short))
    gh = max(2, round(cells * height / short))
    grid = rng.random((gh, gw)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / max(hi - lo, 1e-6)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A muted textured background, (H, W, 3) float32 BGR in [0, 255]."""
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    c1 = _muted_color(rng)
    c2 = c1 + (_muted_color(rng) - c1) * np.float32(rng.uniform(0.35, 0.9))
    if kind == "noise":
        t = 0.65 * _smooth_noise(rng, width, height, int(rng.integers(3, 9)))
        t += 0.35 * _smooth_noise(rng, width, height, int(rng.integers(12, 30)))
    elif kind == "gradient":
        u, _ = _rotated_coords(rng, width, height)
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        if rng.random() < 0.5:  # bend it a little
            t = t ** np.float32(rng.uniform(0.5, 2.0))
    elif kind == "stripes":
        u, _ = _rotated_coords(rng, width, height)
        period = rng.uniform(6.0, 40.0)
        phase = (u / np.float32(period) + np.float32(rng.random())) % 1.0
        if rng.random() < 0.5:
            t = 0.5 + 0.5 * np.sin(np.float32(2.0 * math.pi) * phase)
        else:
            t = (phase < 0.5).astype(np.float32)
    elif kind == "checkerboard":
        u, v = _rotated_coords(rng, width, height)
        cell = np.float32(rng.uniform(8.0, 40.0))
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2.0).astype(np.float32)
        t *= np.float32(rng.uniform(0.4, 1.0))  # lower the contrast
    else:  # blotches
        canvas = np.zeros((height, width), dtype=np.float32)
        short = min(width, height)
        for _ in range(int(rng.integers(10, 40))):
            center = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (
                int(rng.uniform(0.03, 0.2) * short) + 1,
                int(rng.uniform(0.03, 0.2) * short) + 1,
            )
            angle = float(rng.uniform(0.0, 180.0))
            level = float(rng.random())
            cv2.ellipse(canvas, center, axes, angle, 0, 360, level, -1, cv2.LINE_8)
        sigma = float(rng.uniform(2.0, 8.0))
        t = cv2.GaussianBlur(canvas, (0, 0), sigma)
    t = np.asarray(t, dtype=np.float32)[..., None]
    img = c1 * (1.0 - t) + c2 * t
    sigma = np.float32(rng.uniform(2.0, 7.0))
    img += rng.standard_normal((height, width, 3), dtype=np.float32) * sigma
    return img


def _polygon(shape: str, d: float, aspect: float, angle: float) -> np.ndarray:
    """Polygon vertices around the origin, (N, 2) float64, for a nominal extent ``d``."""
    if shape == "square":
        h = 0.42 * d
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "rectangle":
        hw, hh = 0.5 * d, 0.5 * d / aspect
        pts = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
    elif shape == "triangle":
        r = 0.55 * d
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.radians([-90.0, 30.0, 150.0])]
    elif shape == "hexagon":
        r = 0.5 * d
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.radians(np.arange(0, 360, 60))]
    elif shape == "star":
        r_out, r_in = 0.55 * d, 0.55 * d * (0.38 + 0.12 * (aspect - 1.0))
        pts = []
        for k in range(10):
            a = math.radians(-90.0 + 36.0 * k)
            r = r_out if k % 2 == 0 else r_in
            pts.append((r * math.cos(a), r * math.sin(a)))
    else:
        raise ValueError(f"not a polygon shape: {shape!r}")
    c, s = math.cos(angle), math.sin(angle)
    return np.array([(x * c - y * s, x * s + y * c) for x, y in pts], dtype=np.float64)


def _render_local(
    shape: str, d: float, aspect: float, angle: float, cx: float, cy: float
) -> tuple[np.ndarray, int, int]:
    """Rasterise one object into a local patch.

    Returns:
        ``(patch, x0, y0)``: (h, w) uint8 {0, 1} mask and the frame coordinates of its
        top-left pixel.
    """
    if shape == "circle":
        extent = 0.5 * d
    elif shape == "ellipse":
        extent = 0.5 * d
    else:
        poly = _polygon(shape, d, aspect, angle)
        extent = float(np.abs(poly).max())
    pad = int(math.ceil(extent)) + 2
    x0, y0 = int(math.floor(cx)) - pad, int(math.floor(cy)) - pad
    size = 2 * pad + 2
    patch = np.zeros((size, size), dtype=np.uint8)
    lx, ly = cx - x0, cy - y0
    center = (round(lx * _ONE), round(ly * _ONE))
    if shape == "circle":
        cv2.circle(patch, center, round(0.5 * d * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
    elif shape == "ellipse":
        axes = (round(0.5 * d * _ONE), round(0.5 * d / aspect * _ONE))
        cv2.ellipse(patch, center, axes, math.degrees(angle), 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    else:
        pts = np.round((poly + (lx, ly)) * _ONE).astype(np.int32)
        cv2.fillPoly(patch, [pts], 1, cv2.LINE_8, _SHIFT)
    return patch, x0, y0


def _clip(
    patch: np.ndarray, x0: int, y0: int, width: int, height: int
) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Crop a local patch to the frame: (local mask view, frame slices) or None if outside."""
    ph, pw = patch.shape
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + pw, width), min(y0 + ph, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    local = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return local, (slice(fy0, fy1), slice(fx0, fx1))


def _object_pixels(
    rng: np.random.Generator, color: str, patch_shape: tuple[int, int]
) -> np.ndarray:
    """Shaded, jittered, slightly noisy object colour over a patch, (h, w, 3) float32."""
    base = np.array(COLORS[color], dtype=np.float32)
    base = base + rng.integers(-14, 15, size=3).astype(np.float32)
    h, w = patch_shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    g = (xs - w / 2.0) * np.float32(math.cos(theta)) + (ys - h / 2.0) * np.float32(math.sin(theta))
    g /= np.float32(max(h, w) / 2.0)  # roughly [-1, 1]
    amp = np.float32(rng.uniform(0.0, 0.12))
    pix = base * (1.0 + amp * g)[..., None]
    sigma = np.float32(rng.uniform(0.0, 4.0))
    pix += rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    return pix


def generate_scene(
    seed: int,
    width: int = 320,
    height: int = 320,
    min_objects: int = 3,
    max_objects: int = 8,
) -> Scene:
    """Generate one synthetic scene, fully determined by ``seed``.

    Objects are placed back to front. A placement is rejected (and retried smaller or
    elsewhere) if it would hide too much of an earlier object (each object keeps at least
    40 % of its full area and 60 px visible), leave less than 60 % of itself inside the
    frame, or touch an earlier object of the same colour (which would make the two
    inseparable). Sizes range from about 4 % (at least 16 px) to 45 % of the short side.

    Args:
        seed: Non-negative seed; see the module docstring for the seed ranges.
        width: Image width W in pixels.
        height: Image height H in pixels.
        min_objects: Minimum number of instances K.
        max_objects: Maximum number of instances K.

    Returns:
        The scene: ``image`` (H, W, 3) uint8 BGR, ``masks`` (K, H, W) bool, ``xyxy``
        (K, 4) float32, plus colour and shape names per instance.

    Raises:
        ValueError: If the arguments are invalid.
        RuntimeError: If ``min_objects`` objects cannot be placed (image far too small).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if width < 16 or height < 16:
        raise ValueError(f"image too small: {width}x{height}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    rng = np.random.default_rng(seed)
    img = _background(rng, width, height)
    owner = np.full((height, width), -1, dtype=np.int16)
    placed: list[_Placed] = []
    shapes: list[str] = []
    color_names = tuple(COLORS)
    short = min(width, height)
    target = int(rng.integers(min_objects, max_objects + 1))
    kernel = np.ones((5, 5), dtype=np.uint8)  # same-colour objects keep a 2 px gap
    planned = 0
    while len(placed) < target and planned < 4 * max(target, 1) + 8:
        planned += 1
        if placed and rng.random() < _P_REUSE_COLOR:
            color = placed[int(rng.integers(len(placed)))].color
        else:
            color = color_names[int(rng.integers(len(color_names)))]
        if shapes and rng.random() < _P_REUSE_SHAPE:
            shape = shapes[int(rng.integers(len(shapes)))]
        else:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
        lo, hi = _SIZE_BUCKETS[int(rng.choice(len(_SIZE_BUCKETS), p=_SIZE_BUCKET_P))]
        d = max(_MIN_SIZE_PX, rng.uniform(lo, hi) * short)
        aspect = rng.uniform(1.4, 2.4)
        allow_overlap = rng.random() < _P_ALLOW_OVERLAP
        for _ in range(_PLACE_TRIES):
            angle = rng.uniform(0.0, 2.0 * math.pi)
            r = 0.5 * d
            if rng.random() < _P_BORDER or 2 * r >= min(width, height):
                cx, cy = rng.uniform(0.0, width), rng.uniform(0.0, height)
            else:
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            patch, x0, y0 = _render_local(shape, d, aspect, angle, cx, cy)
            d = max(_MIN_SIZE_PX, d * 0.93)  # shrink for the next try, if any
            full = int(patch.sum())
            clipped = _clip(patch, x0, y0, width, height)
            if clipped is None:
                continue
            local, sl = clipped
            m = local.astype(bool)
            inside = int(m.sum())
            if inside < _MIN_NEW_PX or inside < _MIN_INFRAME_FRAC * full:
                continue
            under = owner[sl][m]
            hit = under[under >= 0]
            if hit.size and not allow_overlap:
                continue
            counts = np.bincount(hit, minlength=len(placed)) if hit.size else None
            if counts is not None and any(
                p.visible - int(n) < max(_MIN_VISIBLE_PX, _MIN_VISIBLE_FRAC * p.full_area)
                for p, n in zip(placed, counts, strict=False)
                if n
            ):
                continue
            grown = cv2.dilate(patch, kernel)
            gclip = _clip(grown, x0, y0, width, height)
            assert gclip is not None
            glocal, gsl = gclip
            near = np.unique(owner[gsl][glocal.astype(bool)])
            if any(placed[int(j)].color == color for j in near if j >= 0):
                continue
            # accept: paint through the mask, then update ownership and visibility
            pix = _object_pixels(rng, color, m.shape)
            img[sl][m] = pix[m]
            if counts is not None:
                for j, n in enumerate(counts):
                    placed[j].visible -= int(n)
            owner[sl][m] = len(placed)
            placed.append(_Placed(color=color, full_area=full, visible=inside))
            shapes.append(shape)
            break
    if len(placed) < min_objects:
        raise RuntimeError(
            f"could only place {len(placed)} of {min_objects} objects in {width}x{height}"
        )
    k = len(placed)
    masks = owner[None, :, :] == np.arange(k, dtype=np.int16)[:, None, None]
    xyxy = np.zeros((k, 4), dtype=np.float32)
    for i in range(k):
        cols = np.flatnonzero(masks[i].any(axis=0))
        rows = np.flatnonzero(masks[i].any(axis=1))
        xyxy[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Scene(
        image=image,
        masks=masks,
        colors=tuple(p.color for p in placed),
        shapes=tuple(shapes),
        xyxy=xyxy,
        seed=int(seed),
    )


def iter_scenes(
    start_seed: int,
    count: int,
    width: int = 320,
    height: int = 320,
    min_objects: int = 3,
    max_objects: int = 8,
) -> Iterator[Scene]:
    """Yield ``count`` scenes with seeds ``start_seed .. start_seed + count - 1``.

    Args:
        start_seed: First seed.
        count: Number of scenes.
        width: Image width W in pixels.
        height: Image height H in pixels.
        min_objects: Minimum number of instances per scene.
        max_objects: Maximum number of instances per scene.

    Yields:
        Scenes in seed order; see ``generate_scene``.
    """
    for seed in range(start_seed, start_seed + count):
        yield generate_scene(
            seed, width=width, height=height, min_objects=min_objects, max_objects=max_objects
        )


def save_scenes(
    out_dir: str | Path,
    start_seed: int,
    count: int,
    width: int = 320,
    height: int = 320,
) -> list[Path]:
    """Write scene images as PNG files ``scene_{seed:06d}.png`` (calibration/benchmark inputs).

    Args:
        out_dir: Output directory, created if missing.
        start_seed: First seed (use ``>= EVAL_SEED_START`` for anything that is not training).
        count: Number of scenes.
        width: Image width W in pixels.
        height: Image height H in pixels.

    Returns:
        The written paths, in seed order.

    Raises:
        OSError: If an image cannot be written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for scene in iter_scenes(start_seed, count, width=width, height=height):
        path = out / f"scene_{scene.seed:06d}.png"
        if not cv2.imwrite(str(path), scene.image):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------
# moving objects: a sequence of frames with ground-truth identities (tracking)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SequenceFrame:
    """One frame of a moving-objects sequence with exact ground truth.

    Attributes:
        image: (H, W, 3) uint8 BGR image.
        masks: (K, H, W) bool visible masks of the objects in view (pairwise disjoint).
        ids: (K,) int64 identity of each object: the same object has the same id on every
            frame of the sequence.
        xyxy: (K, 4) float32 tight boxes of the visible masks (``x2, y2`` exclusive).
        index: Frame number in the sequence (0-based).
    """

    image: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    xyxy: np.ndarray
    index: int

    def __len__(self) -> int:
        """Number of objects in view K."""
        return int(self.masks.shape[0])


@dataclass
class _Mover:
    color: str
    shape: str
    d: float
    aspect: float
    angle: float
    spin: float
    x: float
    y: float
    vx: float
    vy: float
    start: int
    texture_seed: int


def generate_sequence(
    seed: int,
    frames: int = 60,
    width: int = 640,
    height: int = 480,
    objects: int = 6,
) -> list[SequenceFrame]:
    """A seeded sequence of objects moving over a fixed background, with their identities.

    The first two objects cross each other (the second passes in front of the first), two
    more cross at right angles, the others move at random; every object keeps a constant
    velocity (about 2.5 % of the short side a frame, so most leave within 60 frames) and
    spin, and later objects enter from the borders on later frames. An object drawn later
    hides what it covers (objects are drawn in identity order); an object counts as in view
    while at least 60 visible pixels of it remain. Objects get distinct colours, so two
    touching objects never merge.

    Args:
        seed: Non-negative seed (use ``>= EVAL_SEED_START`` for evaluations).
        frames: Number of frames.
        width: Image width W in pixels.
        height: Image height H in pixels.
        objects: Number of objects over the whole sequence (at most the 9 colours).

    Returns:
        The frames, in order.

    Raises:
        ValueError: Bad arguments.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if frames < 1 or width < 64 or height < 64:
        raise ValueError(f"need frames >= 1 and at least 64x64, got {frames}, {width}x{height}")
    if not 1 <= objects <= len(COLORS):
        raise ValueError(f"objects must be in [1, {len(COLORS)}], got {objects}")
    rng = np.random.default_rng(seed)
    background = _background(rng, width, height)
    short = min(width, height)
    colors = [str(c) for c in rng.permutation(list(COLORS))[:objects]]
    speed = 0.025 * short  # px a frame: 1.5 short sides over 60 frames
    movers: list[_Mover] = []
    for i in range(objects):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        d = rng.uniform(0.12, 0.24) * short
        y_band = rng.uniform(0.3, 0.7) * height
        if i == 0:  # these two meet in the middle, on the same band
            x, y, vx, vy, start = 0.15 * width, y_band, speed, 0.0, 0
        elif i == 1:
            x, y, vx, vy, start = 0.85 * width, movers[0].y + 0.2 * d, -speed, 0.0, 0
        elif i == 2:  # these two cross at right angles
            x, y, vx, vy, start = 0.3 * width, 0.1 * height, 0.0, speed, 0
        elif i == 3:
            x, y, vx, vy, start = 0.05 * width, 0.6 * height, speed * 1.2, 0.0, 0
        else:  # enter from a border later
            start = int(rng.integers(0, max(frames // 2, 1)))
            side = int(rng.integers(4))
            t = rng.uniform(0.2, 0.8)
            x, y = [(0.0, t * height), (width, t * height), (t * width, 0.0), (t * width, height)][
                side
            ]
            heading = rng.uniform(-0.5, 0.5) + [0.0, math.pi, math.pi / 2, -math.pi / 2][side]
            s = speed * rng.uniform(0.7, 1.6)
            vx, vy = s * math.cos(heading), s * math.sin(heading)
        movers.append(
            _Mover(
                colors[i],
                shape,
                d,
                rng.uniform(1.4, 2.2),
                rng.uniform(0.0, 2.0 * math.pi),
                rng.uniform(-0.03, 0.03),
                x,
                y,
                vx,
                vy,
                start,
                int(rng.integers(1 << 31)),
            )
        )
    out: list[SequenceFrame] = []
    for f in range(frames):
        img = background.copy()
        owner = np.full((height, width), -1, dtype=np.int16)
        for i, m in enumerate(movers):
            t = f - m.start
            if t < 0:
                continue
            patch, x0, y0 = _render_local(
                m.shape, m.d, m.aspect, m.angle + m.spin * t, m.x + m.vx * t, m.y + m.vy * t
            )
            clipped = _clip(patch, x0, y0, width, height)
            if clipped is None:
                continue
            local, sl = clipped
            sel = local.astype(bool)
            pix = _object_pixels(np.random.default_rng(m.texture_seed), m.color, sel.shape)
            img[sl][sel] = pix[sel]
            owner[sl][sel] = i
        ids = [i for i in range(len(movers)) if np.count_nonzero(owner == i) >= _MIN_VISIBLE_PX]
        masks = owner[None] == np.array(ids, dtype=np.int16).reshape(-1, 1, 1)
        xyxy = np.zeros((len(ids), 4), dtype=np.float32)
        for k in range(len(ids)):
            cols = np.flatnonzero(masks[k].any(axis=0))
            rows = np.flatnonzero(masks[k].any(axis=1))
            xyxy[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        out.append(SequenceFrame(image, masks, np.array(ids, dtype=np.int64), xyxy, f))
    return out
