"""Text prompts: CLIP scores in results, the text threshold (prompt, segmenter, bundle), notes
for prompts that select nothing, ``load_clip`` timing, and the threshold calibration."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run_cli

from edge.demo.scenes import COLORS, EVAL_SEED_START, generate_scene
from edge.errors import BundleError, InputError
from edge.prompts import BoxPrompt, PointPrompt, TextPrompt, parse_prompts
from edge.result_schema import result_to_dict
from edge.segmenter import Segmenter
from edge.textcal import choose_threshold, load_samples, write_threshold
from edge.textmatch import CachedTextEncoder
from edge.tokenizer import missing_text_deps


class ColourEncoder:
    """A 'CLIP' that knows colours: text 'a <colour> ...' -> the colour's unit BGR->RGB vector,
    image -> the unit mean RGB of its non-black pixels."""

    logit_scale = 10.0
    max_batch: int | None = None
    has_dense = False

    def encode_text(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            word = t.split()[1]
            b, g, r = COLORS.get(word, (128, 128, 128))
            v = np.array([r, g, b], np.float64) + 1.0
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)

    def encode_images(self, crops: list[np.ndarray]) -> np.ndarray:
        feats = []
        for c in crops:
            px = c.reshape(-1, 3).astype(np.float64)
            px = px[px.sum(1) > 0]
            f = (px.mean(0) if len(px) else np.ones(3)) + 1.0
            feats.append(f / np.linalg.norm(f))
        return np.array(feats, np.float32)


@pytest.fixture(scope="module")
def seg(demo_bundle: Path) -> Segmenter:
    s = Segmenter.load(demo_bundle, threads=1)
    s._text_encoder = CachedTextEncoder(ColourEncoder())  # no tokenizer packages needed
    return s


@pytest.fixture(scope="module")
def scene():  # noqa: ANN201
    return generate_scene(EVAL_SEED_START + 31, 320, 240)


def test_text_result_carries_similarity_and_probability(seg: Segmenter, scene) -> None:  # noqa: ANN001
    seg.text = replace(seg.text, threshold=None)
    text = scene.prompts[0]
    res = seg.segment(scene.image, prompt=[TextPrompt(text), BoxPrompt(scene.xyxy[1])])
    assert len(res) >= 1
    (score,) = res.metadata["text_scores"]
    assert score["text"] == text and score["selected"] and score["threshold"] is None
    assert 0 < score["probability"] <= 1 and -1 <= score["similarity"] <= 1
    assert score["candidates"] >= len(res)
    k = int(np.flatnonzero(res.data["prompt_index"] == 0)[0])
    assert res.data["clip_similarity"][k] == pytest.approx(score["similarity"], abs=1e-6)
    assert res.data["clip_probability"][k] == pytest.approx(score["probability"], abs=1e-6)
    doc = result_to_dict(res)
    by_prompt = {m["prompt_index"]: m for m in doc["masks"]}
    assert by_prompt[0]["clip_similarity"] == pytest.approx(score["similarity"], abs=1e-6)
    if 1 in by_prompt and by_prompt[1]["id"] != by_prompt[0]["id"]:
        assert "clip_similarity" not in by_prompt[1]  # a box-selected mask has no CLIP score
    assert doc["text_scores"] == res.metadata["text_scores"]


@pytest.mark.parametrize("where", ["prompt", "segmenter"])
def test_threshold_above_the_best_similarity_selects_nothing(
    seg: Segmenter, scene, where: str
) -> None:  # noqa: ANN001
    seg.text = replace(seg.text, threshold=None)
    best = seg.segment(scene.image, prompt=TextPrompt(scene.prompts[0]))
    sim = best.metadata["text_scores"][0]["similarity"]
    if where == "prompt":
        prompt = TextPrompt(scene.prompts[0], threshold=min(sim + 0.01, 1.0))
    else:
        prompt = TextPrompt(scene.prompts[0])
        seg.text = replace(seg.text, threshold=min(sim + 0.01, 1.0))
    try:
        res = seg.segment(scene.image, prompt=prompt)
    finally:
        seg.text = replace(seg.text, threshold=None)
    assert len(res) == 0
    (note,) = res.metadata["prompt_notes"]
    assert note.startswith(f"text {scene.prompts[0]!r}: selected nothing: best similarity")
    assert "below the text threshold" in note
    assert res.metadata["text_scores"][0]["selected"] is False
    # a prompt's own threshold wins over the segmenter's
    seg.text = replace(seg.text, threshold=1.0)
    try:
        ok = seg.segment(scene.image, prompt=TextPrompt(scene.prompts[0], threshold=-1.0))
    finally:
        seg.text = replace(seg.text, threshold=None)
    assert len(ok) == 1


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        (
            PointPrompt([[1, 1]], [1]),
            "point (1, 1): selected nothing: the point lies outside every mask",
        ),
        (
            PointPrompt([[1, 1], [2, 2]], [0, 0]),
            None,  # only negative points: every mask without them is selected
        ),
    ],
)
def test_point_notes(seg: Segmenter, scene, prompt, needle) -> None:  # noqa: ANN001
    res = seg.segment(scene.image, prompt=prompt)
    if needle is None:
        assert len(res) > 0 and res.metadata["prompt_notes"] == []
    else:
        assert len(res) == 0 and res.metadata["prompt_notes"] == [needle]


def test_negative_point_inside_the_mask_note(seg: Segmenter, scene) -> None:  # noqa: ANN001
    m = scene.masks[-1]  # drawn last: fully visible
    ys, xs = np.nonzero(m)
    p = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2]))
    res = seg.segment(scene.image, prompt=PointPrompt([p, p], [1, 0]))
    assert len(res) == 0
    (note,) = res.metadata["prompt_notes"]
    assert "every mask with a positive point has a negative point" in note


def test_box_without_overlap_is_noted(seg: Segmenter) -> None:
    sc = generate_scene(EVAL_SEED_START + 32, 320, 240)
    bg = ~sc.masks.any(axis=0)
    # the largest all-background 12x12 box
    for y in range(0, 228, 4):
        for x in range(0, 308, 4):
            if bg[y : y + 12, x : x + 12].all():
                box = [x, y, x + 12, y + 12]
                res = seg.segment(sc.image, prompt=BoxPrompt(box))
                covered = res.mask[:, y : y + 12, x : x + 12].any() if len(res) else False
                if not covered:
                    assert any("overlaps no mask" in n for n in res.metadata["prompt_notes"])
                    return
    pytest.skip("no background box without any mask in this scene")


def test_no_detections_note(seg: Segmenter, scene) -> None:  # noqa: ANN001
    for p in (PointPrompt([[5, 5]], [1]), BoxPrompt([0, 0, 9, 9]), TextPrompt("a red circle")):
        res = seg.segment(scene.image, conf=1.0, prompt=p)
        assert len(res) == 0
        assert "no mask in this frame" in res.metadata["prompt_notes"][0]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"type": "text", "data": "a cup"}, None),
        ({"type": "text", "data": "a cup", "threshold": 0.25}, 0.25),
        ({"type": "text", "data": "a cup", "threshold": -1}, -1),
    ],
)
def test_text_prompt_threshold_field(entry, expected) -> None:  # noqa: ANN001
    (p,) = parse_prompts(entry)
    assert p.threshold == expected
    assert p.to_json() == entry


@pytest.mark.parametrize("bad", [1.5, "high", True, float("nan")])
def test_text_prompt_threshold_is_checked(bad) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="threshold"):
        parse_prompts({"type": "text", "data": "a cup", "threshold": bad})


def test_bundle_threshold_default(demo_bundle: Path, tmp_path: Path) -> None:
    seg = Segmenter.load(demo_bundle, threads=1)
    doc = json.loads((demo_bundle / "bundle.json").read_text())
    measured = doc["clip"]["text_threshold"]
    assert seg.text.threshold == measured == doc["clip"]["text_threshold_calibration"]["threshold"]
    cal = doc["clip"]["text_threshold_calibration"]
    assert cal["balanced_accuracy"] > 0.9 and cal["check"]["true_accept"] > 0.9
    assert cal["matching"]["mean"] > measured > cal["non_matching"]["mean"]
    copy = tmp_path / "b"
    shutil.copytree(demo_bundle, copy)
    doc["clip"]["text_threshold"] = "high"
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="clip.text_threshold"):
        Segmenter.load(copy, threads=1)
    del doc["clip"]["text_threshold"]
    (copy / "bundle.json").write_text(json.dumps(doc))
    assert Segmenter.load(copy, threads=1).text.threshold is None


@pytest.mark.parametrize(
    ("pos", "neg", "threshold", "balanced"),
    [
        ([0.9, 0.8, 0.7], [0.1, 0.2, 0.3], 0.5, 1.0),  # separable: middle of the widest gap
        ([0.9, 0.8, 0.25], [0.1, 0.2, 0.3], 0.55, 5 / 6),  # one lost; midway 0.3-0.8
        ([0.5], [0.5], None, 0.5),  # inseparable
    ],
)
def test_choose_threshold(pos, neg, threshold, balanced) -> None:  # noqa: ANN001
    got = choose_threshold(pos, neg)
    assert got["balanced_accuracy"] == pytest.approx(balanced, abs=1e-4)
    if threshold is not None:
        assert got["threshold"] == pytest.approx(threshold, abs=1e-4)
    assert got["matching"]["count"] == len(pos) and got["non_matching"]["count"] == len(neg)


def test_choose_threshold_needs_both_groups() -> None:
    with pytest.raises(InputError, match="matching"):
        choose_threshold([0.5], [float("nan")])


def test_load_samples_and_write_threshold(tmp_path: Path, demo_bundle: Path) -> None:
    cal = tmp_path / "cal"
    cal.mkdir()
    sc = generate_scene(EVAL_SEED_START + 33, 160, 120)
    cv2.imwrite(str(cal / "a.png"), sc.image)
    cv2.imwrite(str(cal / "b.png"), sc.image)
    words = {"images": {"a.png": ["a mug"], "b.png": ["a dog"]}, "negatives": ["a car"]}
    (cal / "words.json").write_text(json.dumps(words))
    a, b = load_samples(cal)
    assert a.positives == ("a mug",) and a.negatives == ("a car", "a dog")
    assert b.negatives == ("a car", "a mug")
    (cal / "words.json").write_text('{"images": []}')
    with pytest.raises(InputError, match="words.json"):
        load_samples(cal)
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "bundle.json"}
    write_threshold(copy, {"threshold": 0.42, "balanced_accuracy": 0.9}, "test")
    assert Segmenter.load(copy, threads=1).text.threshold == 0.42
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "bundle.json"} == before


def test_demo_clip_text_prompts_through_the_cli(tmp_path: Path) -> None:
    """With the real demo CLIP: scores in the JSON, a word from outside the demo world
    selects nothing (threshold), ``--text-threshold none`` restores the best mask, and CLIP's
    load time is ``load_clip``, not ``preprocess``. Without the text extra (the runtime envs)
    the same command is a clear error naming the extra, and writes nothing."""
    sc = generate_scene(EVAL_SEED_START + 34, 320, 320)
    img = tmp_path / "scene.png"
    cv2.imwrite(str(img), sc.image)
    k = next(i for i, c in enumerate(sc.prompts) if sc.prompts.count(c) == 1)
    out = tmp_path / "r.json"
    proc = run_cli("segment", str(img), "--text", sc.prompts[k], "--text", "a dog",
                   "--json", str(out), "--threads", "1")  # fmt: skip
    if missing_text_deps():
        assert proc.returncode == 2, proc.stderr
        assert 'pip install "fastsam-edge[text]"' in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists()
        return
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert len(doc["masks"]) == 1 and doc["masks"][0]["prompt_index"] == 0
    assert doc["masks"][0]["clip_similarity"] > doc["text_scores"][0]["threshold"] > 0
    assert "text 'a dog': selected nothing: best similarity" in proc.stderr
    assert doc["text_scores"][1]["selected"] is False
    t = doc["timings"]
    assert t["load_clip"] > 0 and t["preprocess"] < t["load_clip"]

    proc = run_cli("segment", str(img), "--text", "a dog", "--text-threshold", "none",
                   "--json", "-", "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["masks"]) == 1 and "selected nothing" not in proc.stderr
