"""Tests for the synthetic scene generator (numpy + OpenCV only, no torch)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.demo.scenes import (
    COLORS,
    EVAL_SEED_START,
    SHAPES,
    Scene,
    generate_scene,
    iter_scenes,
    save_scenes,
)

SEEDS = [0, 1, 2, 7, 123, 4242, 900_000, EVAL_SEED_START, EVAL_SEED_START + 17]
SIZES = [(320, 320), (480, 360), (200, 320), (640, 200)]


@pytest.fixture(scope="module")
def many_scenes() -> list[Scene]:
    return list(iter_scenes(1000, 60))


@pytest.mark.parametrize("seed", SEEDS)
def test_deterministic(seed: int) -> None:
    a, b = generate_scene(seed), generate_scene(seed)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    assert a.xyxy.tobytes() == b.xyxy.tobytes()
    assert (a.colors, a.shapes, a.seed) == (b.colors, b.shapes, b.seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_different_seeds_differ(seed: int) -> None:
    assert generate_scene(seed).image.tobytes() != generate_scene(seed + 1).image.tobytes()


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("seed", SEEDS[:5])
def test_types_and_shapes(seed: int, width: int, height: int) -> None:
    s = generate_scene(seed, width=width, height=height)
    k = len(s)
    assert s.seed == seed
    assert (s.width, s.height) == (width, height)
    assert s.image.shape == (height, width, 3) and s.image.dtype == np.uint8
    assert s.masks.shape == (k, height, width) and s.masks.dtype == np.bool_
    assert s.xyxy.shape == (k, 4) and s.xyxy.dtype == np.float32
    assert len(s.colors) == len(s.shapes) == len(s.prompts) == k
    assert isinstance(s.colors, tuple) and isinstance(s.shapes, tuple)
    assert set(s.colors) <= set(COLORS)
    assert set(s.shapes) <= set(SHAPES)
    assert all(p == f"a {c} {t}" for p, c, t in zip(s.prompts, s.colors, s.shapes, strict=True))


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_masks_nonempty_disjoint_and_boxes_tight(seed: int, width: int, height: int) -> None:
    s = generate_scene(seed, width=width, height=height)
    assert 3 <= len(s) <= 8
    areas = s.masks.reshape(len(s), -1).sum(axis=1)
    assert (areas >= 60).all()
    # visible masks are pairwise disjoint
    assert (s.masks.sum(axis=0) <= 1).all()
    for m, box in zip(s.masks, s.xyxy, strict=True):
        ys, xs = np.nonzero(m)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(box, np.array(expected, dtype=np.float32))
        x1, y1, x2, y2 = box.astype(int)
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


@pytest.mark.parametrize(("width", "height"), SIZES[:3])
@pytest.mark.parametrize("seed", SEEDS)
def test_masks_match_rendered_pixels(seed: int, width: int, height: int) -> None:
    """Mask pixels show the object's colour; the pixels just outside show something else."""
    s = generate_scene(seed, width=width, height=height)
    union = s.masks.any(axis=0)
    img = s.image.astype(np.int16)
    kernel = np.ones((3, 3), np.uint8)
    for m, color in zip(s.masks, s.colors, strict=True):
        inside = img[m]
        base = np.array(COLORS[color], dtype=np.int16)
        dev = np.abs(inside - base).max(axis=1)
        assert np.mean(dev <= 64) >= 0.99, color
        mean = inside.mean(axis=0)
        ring = cv2.dilate(m.astype(np.uint8), kernel).astype(bool) & ~union
        if ring.sum() >= 10:
            # background right next to the object is clearly different from the object
            ring_dev = np.abs(img[ring] - mean).max(axis=1)
            assert np.median(ring_dev) >= 25, color


@pytest.mark.parametrize(("min_objects", "max_objects"), [(1, 1), (3, 8), (5, 5), (0, 2)])
def test_count_bounds(min_objects: int, max_objects: int) -> None:
    for scene in iter_scenes(50, 20, min_objects=min_objects, max_objects=max_objects):
        assert min_objects <= len(scene) <= max_objects


def test_counts_and_distractors_vary(many_scenes: list[Scene]) -> None:
    counts = {len(s) for s in many_scenes}
    assert min(counts) == 3 and max(counts) == 8
    # distractors: many scenes repeat a colour or a shape
    repeats = sum(len(set(s.colors)) < len(s) or len(set(s.shapes)) < len(s) for s in many_scenes)
    assert repeats >= len(many_scenes) // 2
    assert {c for s in many_scenes for c in s.colors} == set(COLORS)
    assert {t for s in many_scenes for t in s.shapes} == set(SHAPES)


def test_sizes_span_small_to_large(many_scenes: list[Scene]) -> None:
    sides = np.concatenate([np.maximum(s.xyxy[:, 2] - s.xyxy[:, 0], 0) for s in many_scenes])
    assert sides.min() <= 0.08 * 320
    assert sides.max() >= 0.35 * 320


def test_iter_scenes_seeds() -> None:
    seeds = [s.seed for s in iter_scenes(EVAL_SEED_START, 3, width=160, height=120)]
    assert seeds == [EVAL_SEED_START, EVAL_SEED_START + 1, EVAL_SEED_START + 2]


def test_save_scenes(tmp_path: Path) -> None:
    paths = save_scenes(tmp_path / "cal", EVAL_SEED_START, 3, 200, 160)
    assert [p.name for p in paths] == [f"scene_{EVAL_SEED_START + i:06d}.png" for i in range(3)]
    for p in paths:
        seed = int(p.stem.split("_")[1])
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(img, generate_scene(seed, 200, 160).image)


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"seed": 0, "min_objects": 5, "max_objects": 2}, {"seed": 0, "width": 8}],
)
def test_invalid_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_scene(**kwargs)


# ------------------------------------------------------------------------------------------
# moving-objects sequences
# ------------------------------------------------------------------------------------------


def test_sequence_is_deterministic_and_identities_persist() -> None:
    from edge.demo.scenes import generate_sequence

    a = generate_sequence(1_000_000, 60, 256, 192, objects=6)
    b = generate_sequence(1_000_000, 60, 256, 192, objects=6)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert len(a) == 60 and [f.index for f in a] == list(range(60))
    for f in a:
        assert f.masks.shape == (len(f), 192, 256) and f.ids.dtype == np.int64
        assert f.masks.sum(axis=0).max() <= 1  # visible masks are disjoint
        assert len(set(f.ids.tolist())) == len(f)
    seen = [set(f.ids.tolist()) for f in a]
    assert len(set().union(*seen)) >= 4
    # objects leave: some identity in view early is gone later, and comes back never
    first, last = seen[0], seen[-1]
    assert first - last


def test_sequence_objects_cross_and_occlude() -> None:
    from edge.demo.scenes import generate_sequence

    seq = generate_sequence(1_000_000, 60, 320, 240)

    # the first two objects move towards each other: their box centres swap sides
    def centre_x(f, ident):
        k = int(np.flatnonzero(f.ids == ident)[0])
        return (f.xyxy[k, 0] + f.xyxy[k, 2]) / 2

    both = [f for f in seq if {0, 1} <= set(f.ids.tolist())]
    assert centre_x(both[0], 0) < centre_x(both[0], 1)
    assert centre_x(both[-1], 0) > centre_x(both[-1], 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"seed": 1, "frames": 0}, {"seed": 1, "width": 32}, {"seed": 1, "objects": 10}],
)
def test_sequence_invalid_arguments(kwargs: dict[str, int]) -> None:
    from edge.demo.scenes import generate_sequence

    with pytest.raises(ValueError):
        generate_sequence(**kwargs)
