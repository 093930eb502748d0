"""The dense text prefilter: mask pooling over CLIP's dense map, shortlists, the select path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge.clip import DenseMap
from edge.errors import BundleError, InputError
from edge.prefilter import candidates_only, cell_counts, mask_embeddings, shortlist
from edge.prompts import TextPrompt
from edge.selection import select
from edge.textmatch import CachedTextEncoder, TextOptions, dense_text_matches
from edge.types import MaskCrop


def _brute_counts(
    mask: np.ndarray, scale: float, stride: int, grid: tuple[int, int]
) -> np.ndarray:
    """Per pixel: the cell its centre falls in (clipped to the grid), counted."""
    out = np.zeros(grid, dtype=np.float32)
    for y, x in zip(*np.nonzero(mask), strict=True):
        r = min(int((y + 0.5) * scale // stride), grid[0] - 1)
        c = min(int((x + 0.5) * scale // stride), grid[1] - 1)
        out[r, c] += 1
    return out


def _dense(grid: tuple[int, int], scale: float, stride: int = 32, d: int = 4) -> DenseMap:
    rng = np.random.default_rng(0)
    return DenseMap(rng.standard_normal((*grid, d)).astype(np.float32), scale, stride)


@pytest.mark.parametrize(
    ("frame_hw", "scale", "box"),
    [
        ((480, 640), 0.5, (0, 0, 640, 480)),  # the whole frame
        ((480, 640), 0.5, (100, 37, 230, 150)),  # inside, not cell-aligned
        ((480, 640), 0.5, (600, 440, 640, 480)),  # bottom-right corner
        ((320, 320), 1.0, (31, 31, 34, 34)),  # across four cells
        ((100, 300), 320 / 300, (5, 5, 295, 95)),  # upscaled frame
        ((480, 640), 0.5, (63, 0, 65, 2)),  # a 2x2 mask on a cell border
    ],
)
def test_cell_counts_match_per_pixel_rule(frame_hw, scale, box):
    h, w = frame_hw
    grid = (-(-round(h * scale) // 32), -(-round(w * scale) // 32))
    rng = np.random.default_rng(1)
    full = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    full[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
    crop = MaskCrop(full[y0:y1, x0:x1].copy(), x0, y0)
    got = cell_counts(crop, _dense(grid, scale))
    np.testing.assert_array_equal(got, _brute_counts(full, scale, 32, grid))
    assert got.sum() == crop.area


def test_cell_counts_of_an_empty_mask():
    crop = MaskCrop(np.zeros((5, 7), dtype=bool), 3, 4)
    assert not cell_counts(crop, _dense((3, 4), 0.25)).any()


def test_mask_embeddings_are_normalised_pooled_terms():
    # one-hot terms per cell: the pooled embedding is the mask's normalised cell histogram
    grid = (2, 3)
    feats = np.eye(6, dtype=np.float32).reshape(2, 3, 6)
    dense = DenseMap(feats, 1.0, 32)
    a = np.zeros((64, 96), dtype=bool)
    a[0:32, 0:48] = True  # 32x32 in cell (0,0), 32x16 in cell (0,1)
    crops = [MaskCrop(a, 0, 0), MaskCrop(np.zeros((2, 2), dtype=bool), 0, 0)]
    emb = mask_embeddings(crops, np.array([0, 1]), dense)
    want = np.array([1024, 512, 0, 0, 0, 0], dtype=np.float32)
    np.testing.assert_allclose(emb[0], want / np.linalg.norm(want), rtol=1e-6)
    assert not emb[1].any()  # no pixel: a zero row, similarity 0
    assert mask_embeddings(crops, np.zeros(0, dtype=np.intp), dense).shape == (0, 6)
    assert grid == dense.grid_hw


@pytest.mark.parametrize(
    ("scores", "size", "want"),
    [
        ([[0.1, 0.9, 0.5]], 1, [11]),
        ([[0.1, 0.9, 0.5]], 2, [11, 12]),
        ([[0.1, 0.9, 0.5], [0.8, 0.0, 0.0]], 1, [10, 11]),  # united over texts
        ([[0.5, 0.5, 0.5]], 2, [10, 11]),  # ties: lower index
        ([[0.1, 0.9, 0.5]], 9, [10, 11, 12]),  # more than there are
    ],
)
def test_shortlist(scores, size, want):
    got = shortlist(np.asarray(scores, dtype=np.float32), np.array([10, 11, 12]), size)
    assert got.tolist() == want


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "3"])
def test_shortlist_rejects_bad_size(size):
    with pytest.raises(InputError, match="text_shortlist: expected a positive integer"):
        shortlist(np.zeros((1, 3), dtype=np.float32), np.arange(3), size)


class _Dets:
    """Just what the text path of ``select`` uses from ``Detections``."""

    def __init__(self, masks: Any) -> None:
        self.masks = masks
        self.source_hw = masks.image_hw
        self._caches: dict[type, Any] = {}

    def cache(self, kind: type) -> Any:
        return self._caches.setdefault(kind, kind())

    def __len__(self) -> int:
        return len(self.masks)

    def nonempty(self) -> list[int]:
        return [i for i in range(len(self.masks)) if self.masks.crops[i].area > 0]

    def to_masks(self, indices: Any = None) -> Any:
        from edge.types import Masks

        if indices is None:
            return self.masks
        idx = np.asarray(indices, dtype=np.intp)
        return Masks(
            xyxy=self.masks.xyxy[idx],
            confidence=self.masks.confidence[idx],
            crops=tuple(self.masks.crops[i] for i in idx),
            image_hw=self.masks.image_hw,
        )


class _Encoder:
    """A colour "CLIP": a crop's embedding is its mean RGB; the dense map too, per cell."""

    logit_scale = 100.0
    max_batch = 2

    def __init__(self, dense: bool = True) -> None:
        self.has_dense = dense
        self.crops_encoded = 0
        self.dense_calls = 0
        self.sides: list[int | None] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        table = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
        v = np.array([table[t] for t in texts], dtype=np.float32) + 0.05
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_images(self, crops_rgb: list[np.ndarray]) -> np.ndarray:
        assert len(crops_rgb) <= self.max_batch
        self.crops_encoded += len(crops_rgb)
        v = np.stack(
            [c.reshape(-1, 3)[c.reshape(-1, 3).any(1)].mean(0) for c in crops_rgb]
        ).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_dense(self, image_rgb: np.ndarray, long_side: int | None = None) -> DenseMap:
        self.dense_calls += 1
        self.sides.append(long_side)
        h, w = image_rgb.shape[:2]
        g = image_rgb.reshape(h // 16, 16, w // 16, 16, 3).mean((1, 3)).astype(np.float32)
        return DenseMap(g, 1.0, 16)


def _scene() -> tuple[np.ndarray, Any]:
    from edge.types import Masks

    img = np.zeros((64, 96, 3), dtype=np.uint8)  # BGR
    boxes = [
        (0, 0, 32, 32, (0, 0, 200)),
        (32, 0, 64, 32, (0, 200, 0)),
        (64, 32, 96, 64, (200, 0, 0)),
    ]
    crops, xyxy = [], []
    for x0, y0, x1, y1, bgr in boxes:
        img[y0:y1, x0:x1] = bgr
        crops.append(MaskCrop(np.ones((y1 - y0, x1 - x0), dtype=bool), x0, y0))
        xyxy.append((x0, y0, x1, y1))
    masks = Masks(
        xyxy=np.asarray(xyxy, dtype=np.float32),
        confidence=np.array([0.9, 0.8, 0.7], dtype=np.float32),
        crops=tuple(crops),
        image_hw=(64, 96),
    )
    return img, masks


def test_dense_path_encodes_only_the_shortlist_and_reuses_the_frame():
    img, masks = _scene()
    enc = _Encoder()
    cached = CachedTextEncoder(enc)
    dets = _Dets(masks)
    prompts = [TextPrompt(text="blue")]
    sel = select(dets, prompts, img, cached, TextOptions(prefilter="dense", shortlist=1))
    assert list(sel.prompt_index) == [2]  # the blue square (BGR (200, 0, 0))
    assert enc.crops_encoded == 1 and enc.dense_calls == 1
    sel = select(
        dets, [TextPrompt(text="red")], img, cached, TextOptions(prefilter="auto", shortlist=1)
    )
    assert list(sel.prompt_index) == [0]
    assert enc.crops_encoded == 2 and enc.dense_calls == 1  # map reused, one new crop
    sel = select(
        dets, [TextPrompt(text="blue")], img, cached, TextOptions(prefilter="dense", shortlist=1)
    )
    assert enc.crops_encoded == 2  # nothing new


def test_dense_matches_equal_the_all_masks_choice_with_a_full_shortlist():
    img, masks = _scene()
    cached = CachedTextEncoder(_Encoder())
    texts = ["red", "green", "blue"]
    tf = cached.encode_text(texts)
    got = dense_text_matches(_Dets(masks), img, cached, tf, size=3)
    assert [m.index for m in got] == [0, 1, 2]
    assert all(m.candidates == 3 for m in got)
    assert all(0.0 < m.probability <= 1.0 for m in got)


def test_score_prefilter_ignores_the_dense_map():
    img, masks = _scene()
    enc = _Encoder()
    sel = select(_Dets(masks), [TextPrompt(text="green")], img, CachedTextEncoder(enc),
                 TextOptions(prefilter="score"))  # fmt: skip
    assert list(sel.prompt_index) == [1]
    assert enc.dense_calls == 0 and enc.crops_encoded == 3


def test_dense_needs_a_dense_encoder():
    img, masks = _scene()
    with pytest.raises(BundleError, match="text_prefilter: 'dense' needs a CLIP with a dense"):
        select(_Dets(masks), [TextPrompt(text="red")], img, CachedTextEncoder(_Encoder(False)),
               TextOptions(prefilter="dense"))  # fmt: skip
    with pytest.raises(InputError, match="text_prefilter"):
        TextOptions(prefilter="clever")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"top_k": 0}, "text_top_k"),
        ({"shortlist": 0}, "text_shortlist"),
        ({"shortlist": True}, "text_shortlist"),
        ({"crop": "tight"}, "text_crop"),
        ({"threshold": 1.5}, "text_threshold"),
        ({"dense_side": 8}, "text_dense_side"),
    ],
)
def test_text_options_name_the_bad_field(changes: dict, field: str) -> None:
    with pytest.raises(InputError, match=field):
        TextOptions(**changes)


def test_demo_bundle_vit_has_no_dense_map():
    """The demo bundle's CLIP is a ViT: ``auto`` takes the score prefilter there."""
    from edge.bundle import read_manifest
    from edge.demo import demo_bundle

    assert "dense" not in read_manifest(demo_bundle()).clip.to_json()


def test_candidates_only_blacks_out_everything_else():
    rng = np.random.default_rng(3)
    img = rng.integers(1, 256, (20, 30, 3), dtype=np.uint8)
    a = np.zeros((4, 5), dtype=bool)
    a[1:, 2:] = True
    crops = [MaskCrop(a, 2, 3), MaskCrop(np.ones((2, 2), dtype=bool), 20, 10),
             MaskCrop(np.ones((5, 5), dtype=bool), 10, 10)]  # fmt: skip
    out = candidates_only(img, crops, np.array([0, 1]))  # the third is no candidate
    keep = np.zeros((20, 30), dtype=bool)
    keep[4:7, 4:7] = True
    keep[10:12, 20:22] = True
    np.testing.assert_array_equal(out[keep], img[keep])
    assert not out[~keep].any() and out.dtype == np.uint8
    assert img.all()  # the input is untouched
