"""Prompt selection: lazy selection == brute force over assembled masks, text matching.

Runtime-only (numpy, onnxruntime, OpenCV). The brute-force selections below are written
straight from the ultralytics 8.4.190 ``FastSAMPredictor.prompt`` semantics (and the FastSAM
repository's ``point_prompt`` for ``official``) on dense, fully assembled masks; the runtime's
lazy path must give exactly the same masks. Counts are never hard-coded (the demo bundle may be
retrained).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import mask_key

import edge.selection as selection_mod
import edge.textmatch as textmatch_mod
from edge import BundleError, InputError, Segmenter
from edge.demo.scenes import generate_scene
from edge.postprocess import Detections, prepare_detections
from edge.preprocess import letterbox
from edge.prompts import BoxPrompt, PointPrompt, TextPrompt, validate_prompt
from edge.selection import mask_logit_at, select, selection_to_masks
from edge.textmatch import CachedTextEncoder, select_by_text
from edge.types import Masks

# --------------------------------------------------------------------------------------------
# fixtures and brute force
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg(demo_bundle: Path) -> Segmenter:
    return Segmenter.load(demo_bundle, threads=1)


class Frame:
    """One image through the detector: raw outputs, the everything-mode result, dense masks."""

    def __init__(self, seg: Segmenter, image: np.ndarray, conf: float) -> None:
        spec = seg.manifest.input
        tensor, info = letterbox(image, spec.imgsz, spec.stride, auto=spec.dynamic)
        self.image = image
        self.outputs = seg.session.run(None, {spec.name: tensor})
        # at most ``conf``, low enough to keep >= 40 candidates whatever the bundle's training
        scores = np.sort(self.outputs[0][0, 4])[::-1]
        conf = min(conf, float(scores[40]))
        self.args = (info.input_hw, info.source_hw, conf, 0.9, 300)
        self.full = self.dets().to_masks()
        self.dense = self.full.mask
        self.area = self.dense.sum((1, 2))
        self.keys = {mask_key(self.full, i): i for i in range(len(self.full))}
        assert len(self.keys) == len(self.full)

    def dets(self) -> Detections:
        return prepare_detections(*self.outputs, *self.args)

    def lazy(self, prompts: list) -> tuple[list[int], list[int], Masks, Detections]:
        """Our selection as indices into ``full`` (+ prompt indices), the result, the dets.

        Merged (``official``) masks come last and are not mapped.
        """
        dets = self.dets()
        sel = select(dets, prompts)
        res = selection_to_masks(dets, sel)
        n = len(res) - len(sel.merged)
        idx = [self.keys[mask_key(res, i)] for i in range(n)]
        return idx, res.data["prompt_index"][:n].tolist(), res, dets


def brute_box(fr: Frame, box) -> int | None:  # noqa: ANN001
    """Reference: int32 cast, clip, IoU of the filled box vs mask pixels, float32 argmax."""
    if len(fr.full) == 0:
        return None
    h, w = fr.full.image_hw
    x1, y1, x2, y2 = (int(v) for v in box)  # int() truncates toward zero like the int32 cast
    x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
    y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
    inter = fr.dense[:, y1:y2, x1:x2].sum((1, 2))
    union = (y2 - y1) * (x2 - x1) + fr.area - inter
    return int(np.argmax(inter.astype(np.float32) / union.astype(np.float32)))


def brute_points(fr: Frame, p: PointPrompt) -> list[int]:
    h, w = fr.full.image_hw
    xy = [(min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)) for x, y in p.points]
    labels = [int(v) for v in p.labels]
    sel = []
    for i in range(len(fr.full)):
        hit = [bool(fr.dense[i, y, x]) for x, y in xy]
        pos = (
            any(hm for hm, lab in zip(hit, labels, strict=True) if lab == 1)
            if 1 in labels
            else True
        )
        neg = any(hm for hm, lab in zip(hit, labels, strict=True) if lab == 0)
        if pos and not neg:
            sel.append(i)
    if p.mode == "best":
        return [min(sel, key=lambda i: (fr.area[i], i))] if sel else []
    return sel


def brute_official(fr: Frame, p: PointPrompt) -> np.ndarray:
    """FastSAM repo ``point_prompt``: area-descending (stable), paint, ``>= 1``."""
    h, w = fr.full.image_hw
    onemask = np.zeros((h, w))
    order = sorted(range(len(fr.full)), key=lambda i: -fr.area[i])
    for i in order:
        for (x, y), lab in zip(p.points, p.labels, strict=True):
            if fr.dense[i, int(y), int(x)]:
                onemask[fr.dense[i]] = 1 if lab == 1 else 0
    return onemask >= 1


def brute_select(fr: Frame, prompts: list) -> tuple[list[int], list[int]]:
    first: dict[int, int] = {}
    for k, p in enumerate(prompts):
        chosen = (
            [brute_box(fr, b) for b in p.xyxy] if isinstance(p, BoxPrompt) else brute_points(fr, p)
        )
        for i in chosen:
            if i is not None:
                first.setdefault(i, k)
    order = sorted(first)
    return order, [first[i] for i in order]


FRAMES = [(101, 320, 240, 0.4), (102, 480, 360, 0.4), (103, 640, 480, 0.5), (104, 200, 300, 0.3)]


@pytest.fixture(scope="module")
def frames(seg: Segmenter) -> list[tuple[Frame, object]]:
    out = []
    for seed, w, h, conf in FRAMES:
        sc = generate_scene(seed, w, h)
        out.append((Frame(seg, sc.image, conf), sc))
    return out


def _sample_prompts(sc, rng: np.random.Generator, n: int) -> list:  # noqa: ANN001
    """Points drawn inside GT objects (+ some anywhere), boxes = jittered GT boxes (+ misses)."""
    h, w = sc.height, sc.width
    out = []
    for _ in range(n):
        kind = rng.integers(0, 3)
        if kind < 2:  # point prompt with 1..4 points
            pts, labels = [], []
            for _ in range(rng.integers(1, 5)):
                if rng.random() < 0.8:
                    ys, xs = np.nonzero(sc.masks[rng.integers(len(sc))])
                    j = rng.integers(len(xs))
                    pts.append([xs[j] + rng.random(), ys[j] + rng.random()])
                else:
                    pts.append([rng.uniform(0, w), rng.uniform(0, h)])
                labels.append(int(rng.random() < 0.7))
            mode = ["reference", "best", "reference"][rng.integers(0, 3)]
            out.append(PointPrompt(np.minimum(pts, [w - 0.01, h - 0.01]), labels, mode))
        else:
            boxes = []
            for _ in range(rng.integers(1, 4)):
                if rng.random() < 0.8:
                    b = sc.xyxy[rng.integers(len(sc))] + rng.uniform(-6, 6, 4)
                else:
                    x, y = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
                    b = np.array([x, y, x + rng.uniform(2, w / 2), y + rng.uniform(2, h / 2)])
                b = np.clip(b, -3, [w + 3, h + 3, w + 3, h + 3])
                b[2:] = np.maximum(b[2:], b[:2] + 2)
                boxes.append(b)
            out.append(BoxPrompt(boxes))
        try:
            validate_prompt(out[-1], (h, w))
        except InputError:
            out.pop()
    return out


# --------------------------------------------------------------------------------------------
# lazy == brute force
# --------------------------------------------------------------------------------------------


def test_lazy_equals_brute_force(frames) -> None:  # noqa: ANN001
    rng = np.random.default_rng(7)
    checked = 0
    for fr, sc in frames:
        assert len(fr.full) > 0
        for p in _sample_prompts(sc, rng, 40):
            validate_prompt(p, fr.full.image_hw)
            idx, pidx, _, dets = fr.lazy([p])
            assert idx == brute_select(fr, [p])[0], p.to_json()
            checked += 1
        # several prompts at once: union with the first selecting prompt recorded
        ps = _sample_prompts(sc, rng, 5)
        idx, pidx, res, _ = fr.lazy(ps)
        assert (idx, pidx) == brute_select(fr, ps)
        assert res.data["prompt_index"].dtype == np.int64
    assert checked == 40 * len(frames)


def test_lazy_assembles_less_than_everything(frames) -> None:  # noqa: ANN001
    fr, sc = frames[2]
    dets = fr.dets()
    select(dets, [BoxPrompt(sc.xyxy[:1])])
    assert dets.num_assembled < len(fr.full)
    dets = fr.dets()
    select(dets, [PointPrompt(sc.xyxy[:1, :2] + 2, [1])])
    assert dets.num_assembled < len(fr.full)


def test_uncertainty_band_falls_back_to_assembly(frames, monkeypatch) -> None:  # noqa: ANN001
    """With a huge tolerance every pixel test goes through assembled masks: same answers."""
    monkeypatch.setattr(selection_mod, "_LOGIT_REL_TOL", 10.0)
    rng = np.random.default_rng(3)
    fr, sc = frames[0]
    for p in _sample_prompts(sc, rng, 12):
        if isinstance(p, PointPrompt):
            assert fr.lazy([p])[0] == brute_select(fr, [p])[0]


def test_mask_logit_at_matches_assembled_pixels(frames) -> None:  # noqa: ANN001
    rng = np.random.default_rng(5)
    for fr, _ in frames[:3]:
        dets = fr.dets()
        n_checked = n_band = 0
        for i in range(0, len(dets), max(1, len(dets) // 25)):
            data = dets.crop(i)
            if data.size == 0:
                continue
            c0, r0 = int(dets.rois[i, 0]), int(dets.rois[i, 1])
            ys = rng.integers(0, data.shape[0], 100)
            xs = rng.integers(0, data.shape[1], 100)
            # include boundary pixels, where the sign changes
            edge_y, edge_x = np.nonzero(data != np.roll(data, 1, axis=1))
            sel = rng.permutation(len(edge_y))[:100]
            for y, x in zip(np.r_[ys, edge_y[sel]], np.r_[xs, edge_x[sel]], strict=True):
                logit, tol = mask_logit_at(
                    dets.coefficients[i], dets.protos, c0 + int(x), r0 + int(y), dets.resampler
                )
                if abs(logit) <= tol:
                    n_band += 1
                    continue
                assert (logit > 0) == data[y, x], (i, x, y, float(logit), float(tol))
                n_checked += 1
            # vectorised form (all detections at one pixel) agrees with the scalar one
        many, _ = mask_logit_at(dets.coefficients, dets.protos, 7, 5, dets.resampler)
        one, _ = mask_logit_at(dets.coefficients[0], dets.protos, 7, 5, dets.resampler)
        assert math.isclose(float(many[0]), float(one), rel_tol=1e-12, abs_tol=1e-12)
        assert n_checked >= 500 and n_band <= n_checked // 100


def _smooth_dets(seed: int) -> Detections:
    """Synthetic detections of blob-shaped masks (like a trained model's), no ONNX.

    Prototype 0 is a constant bias, 1..31 are Gaussian bumps; each detection switches on one
    or two bumps, with a box around them (input 320x320 -> proto 80x80, source 320x240).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:80, 0:80]
    centres = rng.uniform(8, 72, (32, 2))
    sigmas = rng.uniform(3, 12, 32)
    protos = np.exp(
        -((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2)
        / (2 * sigmas[:, None, None] ** 2)
    )
    protos[0] = -0.5
    n = 40
    out0 = np.zeros((1, 37, n), np.float32)
    for j in range(n):
        ks = rng.choice(np.arange(1, 32), size=1 + j % 2, replace=False)
        coef = 0.05 * rng.standard_normal(32)
        coef[0], coef[ks] = 1.0, 1.0
        lo = (centres[ks] - 2.5 * sigmas[ks, None]).min(0) * 4
        hi = (centres[ks] + 2.5 * sigmas[ks, None]).max(0) * 4
        out0[0, 0:2, j] = (lo + hi) / 2
        out0[0, 2:4, j] = hi - lo
        out0[0, 4, j] = 0.99 - j * 0.01
        out0[0, 5:, j] = coef
    return prepare_detections(
        out0, protos[None].astype(np.float32), (320, 320), (240, 320), 0.4, 1.0, 300
    )


def test_sign_bounds_are_rigorous_and_useful(frames) -> None:  # noqa: ANN001
    """Certain-sign counts never exceed the assembled truth; on smooth masks they decide most
    pixels (the random-weight demo model's masks are noise at prototype scale)."""
    rng = np.random.default_rng(9)
    for dets in [fr.dets() for fr, _ in frames] + [_smooth_dets(1), _smooth_dets(2)]:
        decided = total = 0
        for i in range(0, len(dets), 3):
            sb = selection_mod.sign_bounds(dets, i)
            data = dets.crop(i)
            c0, r0, c1, r1 = (int(v) for v in dets.rois[i])
            lo, hi = sb.area_bounds()
            assert lo <= int(data.sum()) <= hi
            decided += lo + data.size - hi
            total += data.size
            for _ in range(5):
                x0, x1 = np.sort(rng.integers(c0 - 5, c1 + 6, 2))
                y0, y1 = np.sort(rng.integers(r0 - 5, r1 + 6, 2))
                n, pos, neg = sb.counts(int(x0), int(y0), int(x1), int(y1))
                sub = data[max(y0 - r0, 0) : max(y1 - r0, 0), max(x0 - c0, 0) : max(x1 - c0, 0)]
                assert n == sub.size and pos <= sub.sum() and neg <= sub.size - sub.sum()
    assert decided >= 0.8 * total  # the last, smooth, set


def test_smooth_masks_box_and_best_assemble_little() -> None:
    dets = _smooth_dets(3)
    full = dets.to_masks()
    dense = full.mask
    area = dense.sum((1, 2))
    for i in range(0, len(full), 4):
        ys, xs = np.nonzero(dense[i])
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        d = _smooth_dets(3)
        (w,) = selection_mod.select_boxes(d, BoxPrompt(box))
        assembled = d.num_assembled
        inter = dense[:, box[1] : box[3], box[0] : box[2]].sum((1, 2))
        iou = inter.astype(np.float32) / (
            (box[2] - box[0]) * (box[3] - box[1]) + area - inter
        ).astype(np.float32)
        assert d.nonempty().index(w) == int(np.argmax(iou))
        assert assembled <= len(full) // 4
        pt = [[xs[len(xs) // 2], ys[len(ys) // 2]]]
        d = _smooth_dets(3)
        (b,) = selection_mod.select_points(d, PointPrompt(pt, [1], "best"))
        assert d.num_assembled <= len(full) // 4
        hits = dense[:, pt[0][1], pt[0][0]]
        assert area[d.nonempty().index(b)] == area[hits].min()


def _subset(dets: Detections, idx: list[int], zero: tuple[int, ...] = ()) -> Detections:
    """Detections restricted to ``idx`` (in that order); rows in ``zero`` get an empty mask."""
    coeffs = dets.coefficients[idx].copy()
    coeffs[list(zero)] = 0.0  # logit 0 everywhere -> empty mask (strict > 0)
    return replace(
        dets,
        xyxy=dets.xyxy[idx],
        confidence=dets.confidence[idx],
        coefficients=coeffs,
        rois=dets.rois[idx],
        _crops={},
        _caches={},
    )


def test_box_all_zero_iou_quirk_picks_first_nonempty(frames) -> None:  # noqa: ANN001
    fr, _ = frames[2]
    dets = fr.dets()
    box = np.array([0, 0, 12, 12])
    r = dets.rois
    far = [i for i in range(len(dets)) if r[i, 0] >= 12 or r[i, 1] >= 12]
    assert len(far) >= 3, "scene has no detections away from the corner"
    sub = _subset(dets, far[:6], zero=(0, 1))
    first = _subset(dets, far[:6], zero=(0, 1)).nonempty()[0]
    assert first >= 2
    full = sub.to_masks()
    sub = _subset(dets, far[:6], zero=(0, 1))
    res = selection_to_masks(sub, select(sub, [BoxPrompt(box)]))
    assert len(res) == 1
    # the reference's argmax over all-zero IoUs returns its index 0 = our first non-empty
    assert mask_key(res, 0) == mask_key(full, 0)
    assert sub.num_assembled == first + 1  # the empty ones and the winner, nothing else


def test_box_ties_keep_first_index(frames) -> None:  # noqa: ANN001
    fr, sc = frames[0]
    dets = fr.dets()
    w = brute_box(fr, sc.xyxy[0])
    i = fr.dets().nonempty()[w]
    sub = _subset(dets, [i, i, i])  # three identical masks: exact IoU tie
    res = selection_to_masks(sub, select(sub, [BoxPrompt(sc.xyxy[0])]))
    assert len(res) == 1 and res.confidence[0] == dets.confidence[i]
    sel = select(sub, [BoxPrompt(sc.xyxy[0])])
    assert list(sel.prompt_index) == [0]


def test_best_picks_smallest_valid_mask(frames) -> None:  # noqa: ANN001
    for fr, sc in frames:
        ys, xs = np.nonzero(sc.masks[0])
        pt = [[xs[len(xs) // 2], ys[len(ys) // 2]]]
        ref = fr.lazy([PointPrompt(pt, [1])])[0]
        best = fr.lazy([PointPrompt(pt, [1], "best")])[0]
        if not ref:
            assert best == []
            continue
        assert len(best) == 1 and best[0] in ref
        assert fr.area[best[0]] == min(fr.area[i] for i in ref)


def test_official_returns_one_merged_mask(frames) -> None:  # noqa: ANN001
    rng = np.random.default_rng(11)
    seen = 0
    for fr, sc in frames:
        for _ in range(6):
            k = rng.integers(len(sc))
            ys, xs = np.nonzero(sc.masks[k])
            j = rng.integers(len(xs), size=3)
            p = PointPrompt(np.c_[xs[j], ys[j]], [1, int(rng.random() < 0.5), 1], "official")
            _, _, res, _ = fr.lazy([p])
            expect = brute_official(fr, p)
            if not expect.any():
                assert len(res) == 0
                continue
            assert len(res) == 1 and res.data["prompt_index"].tolist() == [0]
            np.testing.assert_array_equal(res.mask[0], expect)
            c = res.crops[0]
            assert res.xyxy[0].tolist() == [
                c.x0,
                c.y0,
                c.x0 + c.data.shape[1],
                c.y0 + c.data.shape[0],
            ]
            seen += 1
    assert seen >= 5


def test_official_is_appended_after_selected_masks(frames) -> None:  # noqa: ANN001
    fr, sc = frames[1]
    ys, xs = np.nonzero(sc.masks[0])
    pt = [[xs[0], ys[0]]]
    ps = [BoxPrompt(sc.xyxy[1]), PointPrompt(pt, [1], "official")]
    idx, pidx, res, _ = fr.lazy(ps)
    assert idx == [brute_box(fr, sc.xyxy[1])] and pidx == [0]
    if brute_official(fr, ps[1]).any():
        assert len(res) == 2 and res.data["prompt_index"].tolist() == [0, 1]


def test_prompt_index_records_first_selecting_prompt(frames) -> None:  # noqa: ANN001
    fr, sc = frames[0]
    b = sc.xyxy[0]
    ps = [BoxPrompt(sc.xyxy[1]), BoxPrompt(b), BoxPrompt([b, sc.xyxy[1]])]
    idx, pidx, res, _ = fr.lazy(ps)
    w0, w1 = brute_box(fr, sc.xyxy[1]), brute_box(fr, b)
    expect = {w0: 0}
    expect.setdefault(w1, 1)
    assert dict(zip(idx, pidx, strict=True)) == expect
    assert idx == sorted(idx)  # score order


# --------------------------------------------------------------------------------------------
# Segmenter.segment
# --------------------------------------------------------------------------------------------


class FakeEncoder:
    """Colour 'CLIP': image feature = normalised mean RGB of the non-black crop pixels."""

    logit_scale = 100.0
    max_batch: int | None = None
    has_dense = False

    def __init__(self) -> None:
        self.text_calls: list[list[str]] = []
        self.crops: list[np.ndarray] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        table = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1]}
        return np.array([table[t.split()[-1]] for t in texts], np.float32)

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        self.crops = list(crops)
        feats = []
        for c in crops:
            px = c.reshape(-1, 3).astype(np.float64)
            px = px[px.sum(1) > 0]
            f = px.mean(0) if len(px) else np.ones(3)
            feats.append(f / np.linalg.norm(f))
        return np.array(feats, np.float32)


def test_segment_with_prompts(seg: Segmenter) -> None:
    sc = generate_scene(101, 320, 240)
    ps = [BoxPrompt(sc.xyxy[0]), PointPrompt(sc.xyxy[1:2, :2] + 1, [1])]
    res = seg.segment(sc.image, prompt=ps)
    assert res.metadata["prompt"] == [p.to_json() for p in ps]
    assert {"preprocess", "infer", "postprocess", "prompt"} <= set(res.timings)
    assert len(res.data["prompt_index"]) == len(res)
    one = seg.segment(sc.image, prompt=ps[0])
    assert len(one) == 1 and one.metadata["prompt"] == [ps[0].to_json()]
    everything = seg.segment(sc.image)
    assert "prompt" not in everything.metadata and "prompt" not in everything.timings
    assert len(seg.segment(sc.image, prompt=[])) == len(everything)


def test_segment_validates_before_inference(seg: Segmenter) -> None:
    img = np.zeros((240, 320, 3), np.uint8)
    with pytest.raises(InputError, match="point"):
        seg.segment(img, prompt=PointPrompt([[400, 5]], [1]))
    with pytest.raises(InputError, match="type"):
        seg.segment(img, prompt=[{"type": "point", "data": [1, 1]}])
    with pytest.raises(InputError, match="prompt"):
        seg.segment(img, prompt="a red circle")


def test_zero_detections_each_prompt_type(seg: Segmenter) -> None:
    sc = generate_scene(102, 320, 240)
    fake = Segmenter(seg.bundle_dir, seg.manifest, seg.precision, seg.threads, seg.session)
    fake._text_encoder = CachedTextEncoder(FakeEncoder())
    for p in [
        PointPrompt([[10, 10]], [1]),
        PointPrompt([[10, 10]], [0]),
        PointPrompt([[10, 10]], [1], "best"),
        PointPrompt([[10, 10]], [1], "official"),
        BoxPrompt([0, 0, 50, 50]),
        TextPrompt("a red circle"),
    ]:
        res = fake.segment(sc.image, conf=1.0, prompt=p)
        assert len(res) == 0 and res.data["prompt_index"].shape == (0,)
        assert res.metadata["prompt"] == [p.to_json()]


def test_text_prompt_without_clip_is_a_bundle_error(detector_only_bundle: Path) -> None:
    seg = Segmenter.load(detector_only_bundle, threads=1)
    assert not seg.manifest.clip
    with pytest.raises(BundleError, match="no CLIP text support.*--clip ViT-B-32-quickgelu"):
        seg.segment(np.zeros((64, 64, 3), np.uint8), prompt=TextPrompt("a cup"))


def test_select_by_text_follows_reference_crops(frames) -> None:  # noqa: ANN001
    fr, sc = frames[1]
    enc = FakeEncoder()
    texts = ["a red", "a blue", "a green"]
    got = select_by_text(fr.full, fr.image, texts, enc, top_k=None)
    keep = [i for i in range(len(fr.full)) if fr.area[i] > 100]
    assert len(enc.crops) == len(keep)
    for i, crop in zip(keep, enc.crops, strict=True):
        x1, y1, x2, y2 = (int(v) for v in fr.full.xyxy[i].tolist())
        ref = fr.image[y1:y2, x1:x2] * fr.dense[i, y1:y2, x1:x2, None]
        np.testing.assert_array_equal(crop, ref[:, :, ::-1])
    sim = enc.encode_text(texts) @ enc.encode_images(enc.crops).T
    assert got == [keep[j] for j in sim.argmax(1)]
    # top-k: only the k best by score * sqrt(area) are encoded
    got_k = select_by_text(fr.full, fr.image, texts, enc, top_k=5)
    assert len(enc.crops) == min(5, len(keep))
    rank = sorted(keep, key=lambda i: -fr.full.confidence[i] * math.sqrt(fr.area[i]))[:5]
    assert set(got_k) <= set(rank)
    # official crops: white full-frame canvas, the mask's bbox region pasted
    select_by_text(fr.full, fr.image, texts[:1], enc, top_k=3, crop="official")
    assert all(c.shape == fr.image.shape for c in enc.crops)
    # nothing big enough -> -1
    tiny = fr.full[[i for i in range(len(fr.full)) if fr.area[i] <= 100]]
    assert select_by_text(tiny, fr.image, texts, enc) == [-1, -1, -1]


def test_official_text_crop_paste(frames) -> None:  # noqa: ANN001
    fr, _ = frames[0]
    i = int(np.argmax(fr.area))
    canvas = textmatch_mod._text_crop(fr.full, i, fr.image, "official")
    ys, xs = np.nonzero(fr.dense[i])
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ref = np.full_like(fr.image, 255)
    ref[y0:y1, x0:x1] = fr.image[y0:y1, x0:x1]
    np.testing.assert_array_equal(canvas, cv2.cvtColor(ref, cv2.COLOR_BGR2RGB))


def test_segment_text_uses_cached_encoder(seg: Segmenter) -> None:
    sc = generate_scene(103, 320, 240)
    s2 = Segmenter(seg.bundle_dir, seg.manifest, seg.precision, seg.threads, seg.session)
    enc = FakeEncoder()
    s2._text_encoder = CachedTextEncoder(enc, maxsize=2)
    ps = [TextPrompt("a red"), BoxPrompt(sc.xyxy[0]), TextPrompt("a blue")]
    res = s2.segment(sc.image, prompt=ps)
    assert 1 <= len(res) <= 3 and set(res.data["prompt_index"].tolist()) <= {0, 1, 2}
    s2.segment(sc.image, prompt=ps)
    assert enc.text_calls == [["a red", "a blue"]]  # second frame: from the cache
    s2.segment(sc.image, prompt=[TextPrompt("a green"), TextPrompt("a red")])
    assert enc.text_calls[1:] == [["a green"]]
    s2.segment(sc.image, prompt=[TextPrompt("a blue")])  # evicted (LRU of 2)
    assert enc.text_calls[2:] == [["a blue"]]


class ChunkedEncoder(FakeEncoder):
    """FakeEncoder with a crop cap per call, recording the batch sizes it was given."""

    max_batch = 3

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        assert len(crops) <= self.max_batch
        self.batches.append(len(crops))
        return super().encode_images(crops)


@pytest.mark.parametrize("crop", ["reference", "official"])
def test_text_candidates_cut_per_encoder_call(frames, crop: str) -> None:  # noqa: ANN001
    """Crops are cut per encoder call (bounded memory), with the same embeddings and order."""
    fr, _ = frames[1]
    whole = textmatch_mod.embed_text_candidates(fr.full, fr.image, FakeEncoder(), None, crop)
    enc = ChunkedEncoder()
    chunked = textmatch_mod.embed_text_candidates(
        fr.full, fr.image, CachedTextEncoder(enc), None, crop
    )
    n = len(whole.candidates)
    assert n > enc.max_batch
    assert enc.batches == [min(3, n - i) for i in range(0, n, 3)]
    assert np.array_equal(chunked.candidates, whole.candidates)
    np.testing.assert_array_equal(chunked.features, whole.features)
    assert CachedTextEncoder(FakeEncoder()).max_batch is None
