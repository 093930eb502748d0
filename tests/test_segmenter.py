"""edge.segmenter: parallel mask assembly equals serial assembly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edge.demo.scenes import generate_scene
from edge.postprocess import Detections, _resampler, box_roi
from edge.segmenter import Segmenter
from edge.selection import SelectionCache


def _detections(n: int, source_hw: tuple[int, int], seed: int = 0) -> Detections:
    rng = np.random.default_rng(seed)
    h, w = source_hw
    x0 = rng.uniform(-20, w, n)
    y0 = rng.uniform(-20, h, n)
    xyxy = np.stack(
        [x0, y0, x0 + rng.uniform(0, w / 2, n), y0 + rng.uniform(0, h / 2, n)], axis=1
    ).astype(np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
    protos = rng.standard_normal((32, 160, 160)).astype(np.float32)
    return Detections(
        xyxy=xyxy,
        confidence=np.sort(rng.random(n).astype(np.float32))[::-1],
        coefficients=rng.standard_normal((n, 32)).astype(np.float32),
        rois=box_roi(xyxy, source_hw),
        protos=protos,
        resampler=_resampler((160, 160), source_hw),
        source_hw=source_hw,
    )


@pytest.mark.parametrize(("n", "workers"), [(0, 2), (3, 2), (57, 2), (120, 3), (40, 1)])
def test_prefetch_on_pool_equals_serial(n, workers):
    serial = _detections(n, (1080, 1920))
    parallel = _detections(n, (1080, 1920))
    with ThreadPoolExecutor(workers) as pool:
        parallel.pool, parallel.workers = pool, workers
        parallel.prefetch(range(n))
        assert parallel.num_assembled == n
        a, b = serial.to_masks(), parallel.to_masks()
    assert len(a) == len(b)
    for ca, cb in zip(a.crops, b.crops, strict=True):
        assert (ca.x0, ca.y0) == (cb.x0, cb.y0)
        np.testing.assert_array_equal(ca.data, cb.data)


def test_prefetch_skips_assembled_and_duplicates():
    dets = _detections(10, (480, 640))
    first = dets.mask_crop(3)
    with ThreadPoolExecutor(2) as pool:
        dets.pool, dets.workers = pool, 2
        dets.prefetch([3, 3, 5, 7, 9, 1, 1])
    assert dets.num_assembled == 5
    assert dets.mask_crop(3) is first  # cached, not assembled again


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_segmenter_results_do_not_depend_on_assembly_workers(demo_bundle, workers):
    image = generate_scene(1_000_321, 640, 480).image
    ref = Segmenter.load(demo_bundle, threads=1)
    ref.assembly_workers = 1
    seg = Segmenter.load(demo_bundle, threads=2)
    seg.assembly_workers = workers
    a, b = ref.segment(image, conf=0.001), seg.segment(image, conf=0.001)
    assert len(a) == len(b) >= 8  # enough masks for the pool to be used (>= 2 per worker)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    for ca, cb in zip(a.crops, b.crops, strict=True):
        np.testing.assert_array_equal(ca.data, cb.data)
    assert (seg.assembly_pool()[1]) == workers


# --------------------------------------------------------------------------------------------
# detect() once, select() many times
# --------------------------------------------------------------------------------------------


class CountingEncoder:
    """Colour 'CLIP' that counts its calls: image feature = mean RGB of the non-black pixels."""

    TABLE = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1], "yellow": [1, 1, 0]}

    def __init__(self) -> None:
        self.image_calls: list[int] = []
        self.text_calls: list[list[str]] = []

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        feats = np.array([self.TABLE[t.split()[1]] for t in texts], np.float64)
        return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        self.image_calls.append(len(crops))
        feats = []
        for c in crops:
            px = c.reshape(-1, 3).astype(np.float64)
            px = px[px.sum(1) > 0]
            f = px.mean(0) if len(px) else np.ones(3)
            feats.append(f / np.linalg.norm(f))
        return np.array(feats, np.float32)


class CountingSession:
    """Wraps an onnxruntime session and counts detector runs."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.runs += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def counted(demo_bundle) -> tuple[Segmenter, CountingSession, CountingEncoder]:  # noqa: ANN001
    from edge.selection import CachedTextEncoder

    seg = Segmenter.load(demo_bundle, threads=1)
    session = CountingSession(seg.session)
    seg.session = session  # type: ignore[assignment]
    encoder = CountingEncoder()
    seg._text_encoder = CachedTextEncoder(encoder)
    return seg, session, encoder


def _same(a, b) -> None:  # noqa: ANN001
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    for ca, cb in zip(a.crops, b.crops, strict=True):
        assert (ca.x0, ca.y0) == (cb.x0, cb.y0)
        np.testing.assert_array_equal(ca.data, cb.data)
    for key in set(a.data) | set(b.data):
        np.testing.assert_array_equal(a.data[key], b.data[key])
    assert a.metadata == b.metadata


def _prompt_table(sc) -> list:  # noqa: ANN001
    from edge.prompts import BoxPrompt, PointPrompt, TextPrompt

    ys, xs = np.nonzero(sc.masks[-1])
    click = [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]]
    return [
        None,
        PointPrompt(click, [1]),
        PointPrompt(click, [1], "best"),
        PointPrompt(click, [1], "official"),
        BoxPrompt(sc.xyxy[0].astype(np.float64)),
        [BoxPrompt(sc.xyxy[1].astype(np.float64)), PointPrompt(click, [0])],
        TextPrompt(f"a {sc.colors[0]} thing") if sc.colors[0] in CountingEncoder.TABLE else None,
    ]


@pytest.mark.parametrize("seed", [1_000_400, 1_000_401])
def test_select_of_detect_equals_segment(counted, seed) -> None:  # noqa: ANN001
    seg, session, _ = counted
    sc = generate_scene(seed, 640, 480)
    for prompt in _prompt_table(sc):
        dets = seg.detect(sc.image, conf=0.3)
        _same(seg.select(dets, prompt), seg.segment(sc.image, conf=0.3, prompt=prompt))


def test_select_reuses_detections_without_running_the_detector(counted) -> None:  # noqa: ANN001
    seg, session, _ = counted
    sc = generate_scene(1_000_402, 640, 480)
    dets = seg.detect(sc.image)
    runs = session.runs
    fresh = [seg.select(seg.detect(sc.image), p) for p in _prompt_table(sc)]
    runs_fresh = session.runs - runs
    reused = [seg.select(dets, p) for p in _prompt_table(sc)]
    assert session.runs - runs == runs_fresh == len(fresh)  # select ran nothing
    for a, b in zip(fresh, reused, strict=True):
        _same(a, b)
    assert {"preprocess", "infer", "postprocess"} <= set(reused[1].timings)
    assert reused[1].timings["infer"] == dets.timings["infer"]  # the detection's, not re-measured


def test_second_text_prompt_encodes_only_its_text(counted) -> None:  # noqa: ANN001
    from edge.prompts import TextPrompt

    seg, _, enc = counted
    sc = generate_scene(1_000_403, 640, 480)
    dets = seg.detect(sc.image, conf=0.2)
    cache = dets.cache(SelectionCache)
    assert cache.crop_embeddings is None
    before = len(enc.image_calls)
    first = seg.select(dets, TextPrompt("a red thing"))
    assert len(enc.image_calls) == before + 1 and cache.crop_embeddings is not None
    second = seg.select(dets, TextPrompt("a blue thing"))
    third = seg.select(dets, [TextPrompt("a green shape"), TextPrompt("a red thing")])
    assert len(enc.image_calls) == before + 1  # crops embedded once for the frame
    assert enc.text_calls[-1] == ["a green shape"]  # "a red thing" came from the text cache
    # same answers as fresh detections
    for res, text in [(first, "a red thing"), (second, "a blue thing")]:
        _same(res, seg.segment(sc.image, conf=0.2, prompt=TextPrompt(text)))
    _same(
        third,
        seg.segment(
            sc.image, conf=0.2, prompt=[TextPrompt("a green shape"), TextPrompt("a red thing")]
        ),
    )
    # another top-K is another candidate set: embedded again
    seg.text_top_k = 3
    try:
        _same(
            seg.select(dets, TextPrompt("a red thing")),
            seg.select(seg.detect(sc.image, conf=0.2), TextPrompt("a red thing")),
        )
        assert cache.crop_embeddings is not None and cache.crop_embeddings.top_k == 3
    finally:
        seg.text_top_k = 32


def test_select_checks_prompts_against_the_detections(counted) -> None:  # noqa: ANN001
    from edge.errors import InputError
    from edge.prompts import PointPrompt, TextPrompt

    seg, _, _ = counted
    dets = seg.detect(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(InputError, match=r"point\[0\].*off the 320x240 frame"):
        seg.select(dets, PointPrompt([[320, 10]], [1]))
    with pytest.raises(InputError, match="prompt"):
        seg.select(dets, "a red circle")  # type: ignore[arg-type]
    dets.image = None
    with pytest.raises(InputError, match="text: these detections carry no image"):
        seg.select(dets, TextPrompt("a red thing"))


def test_detections_nbytes_and_release(counted) -> None:  # noqa: ANN001
    seg, _, _ = counted
    sc = generate_scene(1_000_404, 640, 480)
    dets = seg.detect(sc.image, conf=0.2)
    base = dets.nbytes
    assert base >= dets.protos.nbytes + sc.image.nbytes
    everything = seg.select(dets)
    packed = sum(c.nbytes for c in everything.crops)
    assert dets.nbytes >= base + packed
    # masks are held bit-packed: about an eighth of their bool crops
    assert packed * 7 < sum(c.data.nbytes for c in everything.crops) <= packed * 8
    dets.release_masks()
    assert dets.nbytes == base and dets.num_assembled == 0
    _same(seg.select(dets), everything)


def test_packed_crops_equal_the_dense_assembly():
    """Every kept crop decodes to exactly what assemble_mask computes (the bool path)."""
    from edge.postprocess import assemble_mask

    dets = _detections(60, (480, 640), seed=3)
    res = dets.to_masks()
    assert len(res) > 20
    dense = res.mask
    kept = [i for i in range(len(dets)) if dets.area(i) > 0]
    for k, i in enumerate(kept):
        ref = assemble_mask(dets.coefficients[i], dets.protos, dets.rois[i], dets.resampler)
        crop = res.crops[k]
        assert (crop.x0, crop.y0) == (int(dets.rois[i, 0]), int(dets.rois[i, 1]))
        np.testing.assert_array_equal(crop.data, ref)
        np.testing.assert_array_equal(dets.crop(i), ref)
        assert crop.area == int(ref.sum()) == int(dense[k].sum())
        h, w = ref.shape
        np.testing.assert_array_equal(dense[k, crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w], ref)


def test_assembled_masks_stay_in_bounded_memory():
    """Assembling many large masks holds them packed: the traced peak stays far below the bool
    crops (each assembled mask is packed before the next one is made)."""
    import tracemalloc

    h, w = 720, 1280
    n = 64
    dets = _detections(n, (h, w), seed=4)
    dets.xyxy[:] = np.array([0, 0, w, h], np.float32)  # every box the whole frame: worst case
    dets.rois[:] = np.array([0, 0, w, h])
    tracemalloc.start()
    try:
        res = dets.to_masks()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bool_bytes = n * h * w
    assert len(res) == n
    assert sum(c.nbytes for c in res.crops) == n * h * (w // 8)
    # packed 7.4 MB + one mask's float32 assembly temporaries (~4 x 3.7 MB); bool: 59 MB
    assert peak < bool_bytes / 2, (peak, bool_bytes)
