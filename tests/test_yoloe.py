"""``edge.yoloe``: the open vocabulary in numpy (runtime only: no torch, no export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import D, FakeYoloeSession, H, S, make_head

from edge.bundle import BundleManifest, YoloeSection, read_manifest
from edge.coco import categories, masks_to_coco
from edge.errors import BundleError, InputError
from edge.overlay import draw_overlay, label_texts
from edge.prompts import PointPrompt, TextPrompt
from edge.result_schema import result_to_dict
from edge.segmenter import Segmenter
from edge.types import MaskCrop, Masks
from edge.yoloe import (
    MAX_WH,
    OpenVocabFrame,
    Vocabulary,
    YoloeHead,
    check_embeddings,
    check_names,
    decode_nms,
    decode_topk,
    l2_normalize,
    scale_sizes,
    score_anchors,
    sigmoid,
)


def test_adapt_is_residual_swiglu_then_normalised() -> None:
    head = make_head()
    raw = l2_normalize(np.random.default_rng(1).standard_normal((3, D)).astype(np.float32))
    x = raw.astype(np.float64)
    x12 = x @ head.w12.T + head.b12
    a, b = x12[:, :H], x12[:, H:]
    y = x + ((a / (1 + np.exp(-a))) * b) @ head.w3.T + head.b3
    want = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(head.adapt(raw), want, atol=1e-5)


def test_folded_contrastive_head_equals_batchnorm_dot_scale_bias() -> None:
    """x @ W[s] + b[s] == (BN_s(x) . normalize(w)) * exp(logit_scale_s) + bias_s."""
    head = make_head()
    rng = np.random.default_rng(2)
    prompts = rng.standard_normal((4, D)).astype(np.float32)
    x = rng.standard_normal((10, D)).astype(np.float32)
    weights, offsets = head.class_weights(prompts)
    w = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    for s in range(S):
        bn = x * head.bn_scale[s] + head.bn_shift[s]
        want = (bn @ w.T) * np.exp(head.logit_scale[s]) + head.bias[s]
        np.testing.assert_allclose(x @ weights[s] + offsets[s], want, rtol=1e-5, atol=1e-5)


def test_head_save_load_and_shape_check(tmp_path: Path) -> None:
    head = make_head()
    head.save(tmp_path / "h.npz")
    back = YoloeHead.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(back.w12, head.w12)
    assert back.embed_dim == D and back.num_scales == S
    np.savez(tmp_path / "bad.npz", **{**{k: getattr(head, k) for k in head.__dataclass_fields__},
             "b3": np.zeros(D + 1, np.float32)})  # fmt: skip
    with pytest.raises(BundleError, match="inconsistent"):
        YoloeHead.load(tmp_path / "bad.npz")
    with pytest.raises(BundleError, match="cannot read"):
        YoloeHead.load(tmp_path / "missing.npz")


def test_scale_sizes_and_scores_per_scale() -> None:
    sizes = scale_sizes((64, 96), (8, 16, 32))
    assert sizes == [8 * 12, 4 * 6, 2 * 3]
    head = make_head()
    vocab = Vocabulary.build(head, ["a", "b"], np.eye(2, D, dtype=np.float32))
    emb = np.random.default_rng(3).standard_normal((1, D, sum(sizes))).astype(np.float32)
    logits = score_anchors(emb, sizes, vocab.weights, vocab.offsets)
    assert logits.shape == (sum(sizes), 2)
    last = emb[0, :, -1] @ vocab.weights[2] + vocab.offsets[2]
    np.testing.assert_allclose(logits[-1], last, rtol=1e-6)
    with pytest.raises(BundleError, match="anchors"):
        score_anchors(emb[:, :, :-1], sizes, vocab.weights, vocab.offsets)


def _output0(boxes_xywh: np.ndarray, nm: int = 2) -> np.ndarray:
    n = len(boxes_xywh)
    coef = np.arange(n * nm, dtype=np.float32).reshape(n, nm)
    return np.concatenate([boxes_xywh, coef], axis=1).T[None].astype(np.float32)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_decode_nms_agnostic_and_class_aware() -> None:
    boxes = np.array([[50, 50, 20, 20], [51, 50, 20, 20], [150, 50, 20, 20], [0, 0, 4, 4]], "f4")
    logits = np.full((4, 2), -20.0, np.float32)
    logits[0, 0], logits[1, 1], logits[2, 1], logits[3, 0] = (
        _logit(0.9), _logit(0.8), _logit(0.7), _logit(0.3)
    )  # fmt: skip
    agn = decode_nms(_output0(boxes), logits, conf=0.5, iou=0.5, max_det=10)
    assert agn.class_id.tolist() == [0, 1]  # box 1 suppressed by box 0, box 3 below conf
    np.testing.assert_allclose(agn.candidates.xyxy[0], [40, 40, 60, 60])
    np.testing.assert_allclose(agn.candidates.confidence, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(agn.candidates.coefficients[1], [4, 5])
    aware = decode_nms(_output0(boxes), logits, conf=0.5, iou=0.5, max_det=10, agnostic=False)
    assert aware.class_id.tolist() == [0, 1, 1]  # different words never suppress each other
    assert len(decode_nms(_output0(boxes), logits, 0.5, 0.5, max_det=1)) == 1
    assert MAX_WH == 7680


def test_decode_nms_strict_threshold_and_nothing() -> None:
    boxes = np.array([[50, 50, 20, 20]], "f4")
    logits = np.array([[0.0]], np.float32)  # score exactly 0.5
    assert len(decode_nms(_output0(boxes), logits, 0.5, 0.7, 300)) == 0
    assert len(decode_nms(_output0(boxes), logits, 0.49, 0.7, 300)) == 1
    empty = decode_nms(_output0(np.zeros((0, 4), "f4")), np.zeros((0, 3), "f4"), 0.1, 0.7, 300)
    assert len(empty) == 0 and empty.candidates.coefficients.shape == (0, 2)


def test_decode_topk_agnostic_and_per_word() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [8, 8, 30, 30]], "f4")  # xyxy
    scores = np.array([[0.9, 0.8], [0.2, 0.6], [0.1, 0.05]], np.float32)
    logits = np.log(scores / (1 - scores)).astype(np.float32)
    agn = decode_topk(_output0(boxes), logits, conf=0.3, max_det=300, head_max_det=3)
    assert agn.class_id.tolist() == [0, 1]  # one word per anchor, no NMS: boxes overlap
    np.testing.assert_allclose(agn.candidates.confidence, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(agn.candidates.xyxy[1], [5, 5, 20, 20])
    per_word = decode_topk(_output0(boxes), logits, 0.3, 300, head_max_det=3, agnostic=False)
    assert per_word.class_id.tolist() == [0, 1, 1]  # anchor 0 twice (0.9 and 0.8)
    np.testing.assert_allclose(per_word.candidates.confidence, [0.9, 0.8, 0.6], rtol=1e-6)
    assert len(decode_topk(_output0(boxes), logits, 0.3, max_det=1)) == 1
    assert len(decode_topk(_output0(boxes), logits, 0.95, 300)) == 0


def test_check_names_and_embeddings() -> None:
    assert check_names([" dog ", "a red mug"]) == ["dog", "a red mug"]
    for bad, match in [("dog", "list"), ([], "at least one"), (["a", " "], "non-blank"),
                       (["a", 3], "non-blank"), (["a", "a "], "repeated")]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            check_names(bad)
    assert check_embeddings(np.zeros((2, 4)), 2, 4).dtype == np.float32
    with pytest.raises(InputError, match="shape"):
        check_embeddings(np.zeros((2, 5)), 2, 4)
    with pytest.raises(InputError, match="finite"):
        check_embeddings(np.full((1, 4), np.nan), 1, 4)


def _section(**kw: object) -> dict:
    d = {"family": "11", "end2end": False, "box_format": "xywh", "embed_dim": D,
         "strides": [8, 16, 32], "head": "yoloe_head.npz",
         "vocabulary": {"names": ["dog"], "file": "vocabulary.npy"}}  # fmt: skip
    d.update(kw)
    return d


def test_yoloe_section_round_trip_and_refusals() -> None:
    sec = YoloeSection.from_json(_section())
    assert YoloeSection.from_json(sec.to_json()) == sec
    for kw, match in [({"family": "v9"}, "family"), ({"end2end": "no"}, "end2end"),
                      ({"box_format": "cxcy"}, "box_format"), ({"strides": []}, "strides"),
                      ({"vocabulary": {"names": ["a"]}}, "vocabulary.file"),
                      ({"text": {"model": "m", "files": {"fp32": "t"}, "precisions": ["int8"],
                                 "tokenizer": {}}}, "precisions")]:  # fmt: skip
        with pytest.raises(BundleError, match=match):
            YoloeSection.from_json(_section(**kw))


def test_manifest_carries_the_typed_section(demo_bundle: Path) -> None:
    doc = read_manifest(demo_bundle).to_dict()
    assert read_manifest(demo_bundle).yoloe is None
    doc["yoloe"] = _section()
    m = BundleManifest.from_dict(doc)
    assert m.yoloe is not None and m.yoloe.vocabulary == ("dog",) and "yoloe" not in m.extra
    assert m.to_dict()["yoloe"] == YoloeSection.from_json(_section()).to_json()
    doc["yoloe"] = _section(family=11)
    with pytest.raises(BundleError, match="yoloe.family"):
        BundleManifest.from_dict(doc)


def _masks(class_id: list[int] | None, names: tuple[str, ...] = ()) -> Masks:
    crops = tuple(MaskCrop(np.ones((2, 3), bool), i * 4, 0) for i in range(2))
    return Masks(
        xyxy=np.array([[0, 0, 3, 2], [4, 0, 7, 2]], np.float32),
        confidence=np.array([0.9, 0.8], np.float32),
        crops=crops,
        image_hw=(4, 8),
        class_id=None if class_id is None else np.array(class_id),
        names=names,
    )


def test_masks_class_ids_labels_and_outputs() -> None:
    agnostic = _masks(None)
    assert agnostic.class_id.tolist() == [-1, -1] and agnostic.labels == [None, None]
    named = _masks([1, 0], ("dog", "cat"))
    assert named.labels == ["cat", "dog"] and named[1].class_id.tolist() == [0]
    assert named[[1]].names == ("dog", "cat")
    with pytest.raises(ValueError, match="out of range"):
        _masks([2, 0], ("dog", "cat"))
    assert Masks.empty(4, 8, names=("dog",)).class_id.shape == (0,)
    doc = result_to_dict(named)
    assert [(m["class_id"], m["label"]) for m in doc["masks"]] == [(1, "cat"), (0, "dog")]
    assert doc["vocabulary"] == ["dog", "cat"]
    assert result_to_dict(agnostic)["masks"][0]["label"] is None
    assert [a["category_id"] for a in masks_to_coco(named)] == [2, 1]
    assert categories(("dog", "cat"))[1] == {"id": 2, "name": "cat", "supercategory": ""}
    assert categories(())[0]["name"] == "object"
    assert label_texts(named, "id+score") == ["0 cat 0.90", "1 dog 0.80"]
    img = np.zeros((4, 8, 3), np.uint8)
    assert not np.array_equal(draw_overlay(img, named, contours=False), img)


def test_text_tower_matches_the_clip_text_encoder(demo_bundle: Path) -> None:
    """The YOLOE word encoder is the CLIP text path (one implementation, two callers)."""
    from edge.clip import ClipEncoder, TextTower
    from edge.tokenizer import ClipTokenizer

    m = read_manifest(demo_bundle)
    clip = ClipEncoder.load(demo_bundle, m, "fp32", threads=1)
    tower = TextTower(
        demo_bundle / m.clip.files["text"]["fp32"],
        ClipTokenizer.from_manifest(demo_bundle, m.clip.tokenizer),
        m.clip.embed_dim,
        threads=1,
        keep=False,
    )
    words = ["a red circle", "blue square"]
    np.testing.assert_allclose(tower.encode(words), clip.encode_text(words), atol=1e-6)
    assert tower.session is None  # keep=False frees it
    assert tower.encode([]).shape == (0, m.clip.embed_dim)
    with pytest.raises(InputError):
        tower.encode("a word")  # type: ignore[arg-type]


@pytest.fixture()
def yoloe_segmenter(demo_bundle: Path) -> Segmenter:
    head = make_head()
    raw = l2_normalize(np.random.default_rng(5).standard_normal((2, D)).astype(np.float32))
    # the direction that scores word 0 highest at scale 0
    weights, _ = head.class_weights(head.adapt(raw))
    direction = weights[0][:, 0] - weights[0][:, 1]
    m = read_manifest(demo_bundle)
    fake = FakeYoloeSession(head, direction / np.linalg.norm(direction))
    section = YoloeSection.from_json(_section(vocabulary={}))
    seg = Segmenter(demo_bundle, m, "fp32", 1, fake, yoloe=section)
    seg._head = head
    seg.set_vocabulary(["dog", "cat"], raw)
    seg.word_cache().put("dog", raw[0])
    return seg


def test_segmenter_open_vocabulary_everything_text_and_points(yoloe_segmenter: Segmenter) -> None:
    seg = yoloe_segmenter
    img = np.full((120, 160, 3), 100, np.uint8)
    everything = seg.segment(img, conf=0.5)
    assert len(everything) == 1 and everything.class_id.tolist() == [0]
    assert everything.names == ("dog", "cat") and seg.vocabulary == ("dog", "cat")
    x1, y1, x2, y2 = everything.xyxy[0]
    assert (x1 + x2) / 2 == pytest.approx(80, abs=1) and (y1 + y2) / 2 == pytest.approx(60, abs=1)
    text = seg.segment(img, conf=0.5, prompt=TextPrompt("dog"))
    assert text.names == ("dog",) and text.data["prompt_index"].tolist() == [0]
    dets = seg.detect(img, conf=0.5)
    assert dets.cache(OpenVocabFrame).nbytes > 0
    again = seg.select(dets, TextPrompt("dog"))
    np.testing.assert_array_equal(again.xyxy, text.xyxy)
    picked = seg.segment(img, conf=0.5, prompt=PointPrompt([[80, 60]], [1]))
    assert picked.class_id.tolist() == [0]
    nothing = seg.segment(img, conf=0.99999999)
    assert len(nothing) == 0 and nothing.names == ("dog", "cat")
    with pytest.raises(InputError, match="separate request"):
        seg.segment(img, prompt=[TextPrompt("dog"), PointPrompt([[1, 1]], [1])])
    with pytest.raises(BundleError, match="no text tower"):
        seg.set_vocabulary(["a new word"])  # not cached, and this bundle has no tower
    with pytest.raises(InputError, match="shape"):
        seg.set_vocabulary(["dog"], np.zeros((1, D + 1), np.float32))


def test_fastsam_bundle_has_no_vocabulary(demo_bundle: Path) -> None:
    seg = Segmenter.load(demo_bundle, threads=1)
    assert seg.vocabulary == () and seg.yoloe is None
    with pytest.raises(BundleError, match="FastSAM bundle"):
        seg.set_vocabulary(["dog"], np.zeros((1, 4), np.float32))
    img = np.zeros((64, 64, 3), np.uint8)
    assert (seg.segment(img).class_id == -1).all()


def test_sigmoid_is_float32() -> None:
    assert sigmoid(np.array([0.0], np.float32)).dtype == np.float32
    assert json.dumps(check_names(["x"])) == '["x"]'
