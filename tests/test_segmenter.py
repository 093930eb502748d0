"""edge.segmenter: Segmenter.detect/select/segment, assembly workers, text encoders."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.demo.scenes import generate_scene
from edge.segmenter import Segmenter
from edge.textmatch import TextCache


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

    logit_scale = 100.0
    max_batch: int | None = None
    has_dense = False

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
    from edge.textmatch import CachedTextEncoder

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
    cache = dets.cache(TextCache)
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
    seg.text = replace(seg.text, top_k=3)
    try:
        _same(
            seg.select(dets, TextPrompt("a red thing")),
            seg.select(seg.detect(sc.image, conf=0.2), TextPrompt("a red thing")),
        )
        assert cache.crop_embeddings is not None and cache.crop_embeddings.top_k == 3
    finally:
        seg.text = replace(seg.text, top_k=32)


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


def test_segment_enters_preprocessing_once(demo_bundle, monkeypatch) -> None:  # noqa: ANN001
    """The frame is normalised and letterboxed once per segment call, prompts or not."""
    import edge.segmenter as segmenter_mod
    from edge.prompts import BoxPrompt

    calls: list[str] = []
    for name in ("normalize_image", "letterbox", "check_prompts", "prepare_detections"):
        real = getattr(segmenter_mod, name)

        def counted(*args, _real=real, _name=name, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(segmenter_mod, name, counted)
    seg = Segmenter.load(demo_bundle, threads=1)
    image = generate_scene(1_000_500, 320, 240).image
    for prompt in (None, BoxPrompt([10, 10, 200, 150])):
        calls.clear()
        seg.segment(image, prompt=prompt)
        assert calls == ["normalize_image", "letterbox", "check_prompts", "prepare_detections"]
