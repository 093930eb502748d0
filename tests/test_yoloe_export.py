"""YOLOE bundles (``export.yoloe``): parity with ultralytics' YOLOE predictor, int8, text tower.

The three families (v8, 11, 26; ``n`` scale, 320 px, dynamic letterbox as the .pt predictor)
are built from ultralytics' yaml with batch norms re-estimated on demo-world frames and a
seeded, spread head (``export.yoloe.build_model``); the reference is ``YOLOE(pt)`` with
``set_classes(names, head.get_tpe(raw))`` and ``retina_masks=True``, on the same raw
embeddings our runtime gets through ``Segmenter.set_vocabulary(names, raw)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.export
pytest.importorskip("ultralytics")
torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from edge import Segmenter  # noqa: E402
from edge.bundle import read_manifest  # noqa: E402
from edge.demo.scenes import generate_scene  # noqa: E402
from edge.errors import BundleError, InputError  # noqa: E402
from edge.preprocess import letterbox  # noqa: E402
from edge.prompts import PointPrompt, TextPrompt  # noqa: E402
from edge.yoloe import Vocabulary, YoloeHead, scale_sizes, score_anchors, sigmoid  # noqa: E402

FAMILIES = ("v8", "11", "26")
NAMES = ["person", "car", "dog", "mug", "plant"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
IMGSZ = 320
IOU = 0.7


def _raw(k: int = len(NAMES), d: int = 512, seed: int = 0) -> np.ndarray:
    """Unit vectors in opposite pairs (v0, -v0, v1, -v1, ...): a seeded head's strongest
    embedding direction then scores high for one word of a pair on some anchors and for the
    other on others, so every family labels masks with several words."""
    v = np.random.default_rng(seed).standard_normal(((k + 1) // 2, d)).astype(np.float32)
    v = np.stack([v, -v], axis=1).reshape(-1, d)[:k]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _images() -> dict[str, np.ndarray]:
    coffee = cv2.imread(os.path.join(skdata.data_dir, "coffee.png"), cv2.IMREAD_COLOR)
    return {
        "scene-4x3": generate_scene(11, 400, 300).image,
        "scene-portrait": generate_scene(13, 240, 320).image,
        "coffee-odd": cv2.resize(coffee, (333, 217), interpolation=cv2.INTER_AREA),
    }


IMAGES = _images()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    from export.yoloe import YoloeOptions, build_model, export_yoloe_bundle, save_checkpoint

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("yoloe")
    np.save(root / "raw.npy", _raw())
    out = {}
    for i, fam in enumerate(FAMILIES):
        pt = save_checkpoint(build_model(fam, "n", seed=i), root / f"yoloe-{fam}n-seg.pt")
        bundle = export_yoloe_bundle(
            pt, root / f"b{fam}", imgsz=IMGSZ, dynamic=True, int8=False,
            options=YoloeOptions(vocab=tuple(NAMES), vocab_embeddings=root / "raw.npy"),
        )  # fmt: skip
        out[fam] = {"pt": pt, "bundle": bundle}
    return out


def _reference(pt: Path, names: list[str], raw: np.ndarray):  # noqa: ANN202
    from ultralytics import YOLOE

    ref = YOLOE(str(pt))
    with torch.no_grad():
        tpe = ref.model.model[-1].get_tpe(torch.from_numpy(raw)[None])
    ref.set_classes(names, tpe)
    return ref


def predict(ref, family: str, image: np.ndarray, conf: float):  # noqa: ANN001, ANN201
    """The reference's answer; YOLOE-26 with ``nms=False`` (its NMS-free one-to-one head, what
    its export and our bundle run; 8.4.190's predictor otherwise switches to the NMS head)."""
    extra = {"nms": False} if family == "26" else {}
    return ref.predict(
        image, imgsz=IMGSZ, conf=conf, iou=IOU, retina_masks=True, verbose=False, **extra
    )[0]


def gap_conf(seg: Segmenter, image: np.ndarray, names: list[str], raw: np.ndarray, target: int):
    """A conf threshold in the widest gap of best-word scores around ``target`` anchors."""
    spec = seg.manifest.input
    tensor, info = letterbox(image, spec.imgsz, spec.stride, auto=spec.dynamic)
    _, emb, _ = seg.session.run(None, {spec.name: tensor})
    head = YoloeHead.load(seg.bundle_dir / seg.yoloe.head)
    vocab = Vocabulary.build(head, names, raw)
    sizes = scale_sizes(info.input_hw, seg.yoloe.strides)
    best = np.sort(sigmoid(score_anchors(emb, sizes, vocab.weights, vocab.offsets)).max(1))[::-1]
    lo, hi = target, min(2 * target, len(best) - 1)
    gaps = best[lo:hi] - best[lo + 1 : hi + 1]
    k = lo + int(np.argmax(gaps))
    assert gaps.max() > 1e-5
    return float((best[k] + best[k + 1]) / 2)


def _pairing(ref_xyxy: np.ndarray, ref_cls: np.ndarray, ours) -> np.ndarray:  # noqa: ANN001
    """For each reference detection, the index of ours with the same word and the nearest box.

    Two detections whose scores differ by float noise (torch vs onnxruntime, and one CPU's
    kernels vs another's: AVX2 vs AVX-512) can come out of NMS in either order; the sets, not
    the orders, must agree.
    """
    free = np.ones(len(ours), dtype=bool)
    order = np.empty(len(ref_xyxy), dtype=np.intp)
    for i, (box, cls) in enumerate(zip(ref_xyxy, ref_cls, strict=True)):
        cost = np.abs(ours.xyxy - box).max(axis=1) + 1e6 * (ours.class_id != cls) + 1e9 * ~free
        order[i] = int(np.argmin(cost))
        free[order[i]] = False
    return order


def compare(ref, ours) -> dict[str, float]:  # noqa: ANN001
    assert len(ref) == len(ours), f"count: reference {len(ref)}, ours {len(ours)}"
    if len(ours) == 0:
        return {"n": 0}
    ref_cls = ref.boxes.cls.numpy().astype(int)
    ref_xyxy = ref.boxes.xyxy.numpy()
    ours = ours[_pairing(ref_xyxy, ref_cls, ours)]
    np.testing.assert_array_equal(ref_cls, ours.class_id)
    box_err = float(np.abs(ref_xyxy - ours.xyxy).max())
    conf_err = float(np.abs(ref.boxes.conf.numpy() - ours.confidence).max())
    a, b = ref.masks.data.numpy().astype(bool), ours.mask
    iou = (a & b).sum((1, 2)) / np.maximum((a | b).sum((1, 2)), 1)
    assert box_err <= 0.5, f"box error {box_err:.3f} px"
    assert conf_err <= 1e-3, f"score error {conf_err}"
    # one boundary pixel is 10 % of a 10-pixel mask: the per-mask floor is for masks >= 200 px
    big = (a | b).sum((1, 2)) >= 200
    assert iou[big].min() >= 0.99, f"IoU {iou[big].min():.4f} on a mask of >= 200 px"
    assert iou.mean() >= 0.995, f"mean IoU {iou.mean():.4f}"
    STATS.append((len(ours), float(iou.mean()), float(iou[big].min()), box_err, conf_err))
    return {"n": len(ours), "min_iou": float(iou.min()), "mean_iou": float(iou.mean())}


STATS: list[tuple[int, float, float, float, float]] = []


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("image", "target"), [("scene-4x3", 60), ("coffee-odd", 50)])
def test_parity_with_ultralytics_predictor(built, family: str, image: str, target: int) -> None:
    """Same weights, same vocabulary: boxes, labels, scores and masks as ultralytics'."""
    raw = _raw()
    seg = Segmenter.load(built[family]["bundle"], threads=2)
    assert seg.vocabulary == tuple(NAMES)
    img = IMAGES[image]
    conf = gap_conf(seg, img, NAMES, raw, target)
    ref = _reference(built[family]["pt"], NAMES, raw)
    r = predict(ref, family, img, conf)
    ours = seg.segment(img, conf=conf, iou=IOU)
    stats = compare(r, ours)
    assert stats["n"] >= 4, f"only {stats['n']} masks: the case does not test much"
    assert ours.names == tuple(NAMES)
    WORDS_SEEN.setdefault(family, set()).update(ours.class_id.tolist())


WORDS_SEEN: dict[str, set[int]] = {}


def test_parity_cases_cover_several_words() -> None:
    """Across the parity cases each family labels masks with more than one word."""
    assert set(WORDS_SEEN) == set(FAMILIES), "run with the parity cases"
    for row in STATS:  # the parity table (pytest -s)
        n, mean, low, box, score = row
        print(f"masks {n}, mean IoU {mean:.5f}, min IoU (>= 200 px) {low:.5f}", end=", ")
        print(f"box {box:.4f} px, score {score:.1e}")
    for family, words in WORDS_SEEN.items():
        assert len(words) >= 2, f"{family}: one word only ({words}): labels are not tested"


@pytest.mark.parametrize("family", FAMILIES)
def test_one_word_and_a_new_word_without_reexport(built, family: str) -> None:
    """K=1, and a vocabulary that was never exported: still the reference's answer."""
    raw = _raw(1, seed=7)
    seg = Segmenter.load(built[family]["bundle"], threads=2)
    seg.set_vocabulary(["zebra"], raw)
    img = IMAGES["scene-portrait"]
    conf = gap_conf(seg, img, ["zebra"], raw, 20)
    ref = _reference(built[family]["pt"], ["zebra"], raw)
    r = predict(ref, family, img, conf)
    ours = seg.segment(img, conf=conf, iou=IOU)
    compare(r, ours)
    assert len(ours) >= 3 and set(ours.class_id.tolist()) == {0}


@pytest.mark.parametrize("family", ["11", "26"])
def test_zero_detections(built, family: str) -> None:
    seg = Segmenter.load(built[family]["bundle"], threads=2)
    img = IMAGES["coffee-odd"]
    ref = _reference(built[family]["pt"], NAMES, _raw())
    r = predict(ref, family, img, 0.99999)
    ours = seg.segment(img, conf=0.99999)
    assert len(r) == len(ours) == 0
    assert ours.class_id.shape == (0,) and ours.names == tuple(NAMES)
    assert ours.mask.shape == (0, *img.shape[:2])


def test_bundle_manifest_records_the_head(built) -> None:
    for fam in FAMILIES:
        m = read_manifest(built[fam]["bundle"])
        y = m.yoloe
        assert y is not None and y.family == fam
        assert y.end2end == (fam == "26") and y.box_format == ("xyxy" if fam == "26" else "xywh")
        assert y.embed_dim == 512 and y.strides == (8, 16, 32)
        assert y.vocabulary == tuple(NAMES) and y.vocabulary_file in m.files
        assert y.head in m.files and y.text is None
        assert m.thresholds.conf == 0.25 and m.thresholds.iou == 0.7


def test_point_prompt_and_text_prompt_without_tower(built) -> None:
    seg = Segmenter.load(built["11"]["bundle"], threads=2)
    img = IMAGES["scene-4x3"]
    everything = seg.segment(img, conf=0.3)
    assert len(everything) > 0
    box = everything.xyxy[0]
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    picked = seg.segment(img, conf=0.3, prompt=PointPrompt([[cx, cy]], [1]))
    assert set(picked.class_id.tolist()) <= set(range(len(NAMES)))
    with pytest.raises(BundleError, match="no text tower"):
        seg.segment(img, prompt=TextPrompt("a dog"))
    with pytest.raises(InputError, match="separate request"):
        seg.segment(img, prompt=[TextPrompt("a dog"), PointPrompt([[cx, cy]], [1])])


def test_text_prompt_rescored_on_stored_detections(built) -> None:
    """A phrase on stored detections re-scores the kept outputs: same as segment() with it."""
    seg = Segmenter.load(built["v8"]["bundle"], threads=2)
    raw = _raw()
    seg.word_cache().put("plant", raw[4])  # as if the tower had encoded it
    img = IMAGES["scene-4x3"]
    dets = seg.detect(img, conf=0.3)
    by_select = seg.select(dets, TextPrompt("plant"))
    direct = seg.segment(img, conf=0.3, prompt=TextPrompt("plant"))
    assert len(by_select) == len(direct) > 0
    np.testing.assert_array_equal(by_select.xyxy, direct.xyxy)
    assert set(direct.data["prompt_index"].tolist()) == {0}
    assert direct.names == ("plant",)
    # the vocabulary's own detections of "plant" are a subset of word 4 ... same scores
    seg.set_vocabulary(["plant"], raw[4:5])
    np.testing.assert_array_equal(seg.segment(img, conf=0.3).xyxy, direct.xyxy)


def test_fastsam_bundle_refuses_a_vocabulary(demo_bundle: Path) -> None:
    seg = Segmenter.load(demo_bundle, threads=1)
    with pytest.raises(BundleError, match="FastSAM bundle"):
        seg.set_vocabulary(["dog"])
    assert (seg.segment(generate_scene(1, 160, 120).image).class_id == -1).all()


def test_int8_is_verified_and_keeps_the_scoring_float(tmp_path: Path, built) -> None:
    from export.yoloe import YoloeOptions, export_yoloe_bundle

    raw = Path(built["11"]["pt"]).parent / "raw.npy"
    out = export_yoloe_bundle(
        built["11"]["pt"], tmp_path / "q", imgsz=IMGSZ, int8=True, verify_threads=1,
        options=YoloeOptions(vocab=tuple(NAMES), vocab_embeddings=raw),
    )  # fmt: skip
    m = read_manifest(out)
    q = m.quantization
    assert q is not None and q.recipe["float_branches"] == ["cv3", "cv5"]
    if q.ok:
        assert "int8" in m.precisions
        seg = Segmenter.load(out, precision="int8", threads=1)
        assert len(seg.segment(IMAGES["scene-4x3"])) >= 0
        # the agreement script (and the arm64 check through it) decodes as a frame does
        agreement = _script("int8_agreement")
        report = tmp_path / "agree.json"
        agreement.main([str(out), "--scenes", "2", "--kernels", "reference", "--threads", "1",
                        "--objects", "2,3", "--out", str(report)])  # fmt: skip
        got = json.loads(report.read_text())
        assert got["vocabulary"] == NAMES and got["reference"]["mean_iou_fp32_to_int8"] > 0
        with pytest.raises(SystemExit, match="FastSAM bundle"):
            agreement.main([str(REPO_ROOT / "edge/demo/assets/demo-bundle"), "--vocab", "red"])
    else:
        assert q.status.startswith("refused") and "int8" not in m.precisions
    assert q.verify["mean_iou_fp32_to_int8"] > 0


def test_export_cli_passes_the_int8_plan_options(tmp_path: Path, built) -> None:
    import cv2

    from edge.demo.scenes import generate_scene
    from export.cli import main

    held = tmp_path / "held"
    held.mkdir()
    for i in range(2):
        cv2.imwrite(str(held / f"{i}.png"), generate_scene(1_700_000 + i, IMGSZ, IMGSZ).image)
    raw = Path(built["11"]["pt"]).parent / "raw.npy"
    rc = main(
        [str(built["11"]["pt"]), "--out", str(tmp_path / "q"), "--imgsz", str(IMGSZ),
         "--no-memory", "--vocab", ",".join(NAMES), "--vocab-embeddings", str(raw),
         "--int8-plan", "fixed", "--int8-min-iou", "0.01", "--calib-count", "2",
         "--verify-images", str(held), "--int8-float-branches", "cv3"]
    )  # fmt: skip
    assert rc == 0
    q = read_manifest(tmp_path / "q").quantization
    assert q is not None and q.plan is not None and q.plan.mode == "fixed"
    assert q.held_out.source == str(held) and q.held_out.images == 2
    assert q.held_out.calibration_images == 2  # all calibrate when --verify-images is given
    assert q.recipe["float_branches"] == ["cv3"]  # as given, not YOLOE's default cv3,cv5


@pytest.fixture(scope="module")
def text_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight text tower as ultralytics ships it: TorchScript, tokens -> unit (T, 512)."""
    from export.yoloe import make_text_tower

    return make_text_tower(tmp_path_factory.mktemp("ts") / "mobileclip2_b.ts")


def test_text_tower_encodes_new_words_as_torch(tmp_path: Path, built, text_ts: Path) -> None:
    from export.yoloe import YoloeOptions, export_yoloe_bundle

    out = export_yoloe_bundle(
        built["26"]["pt"], tmp_path / "t", imgsz=IMGSZ, int8=False,
        options=YoloeOptions(vocab=("person", "dog"), text_weights=text_ts),
    )  # fmt: skip
    m = read_manifest(out)
    text = m.yoloe.text
    assert text is not None and text.model == "mobileclip2:b"
    assert text.verify["fp32"]["min_cosine"] >= 0.9999
    assert text.files["fp32"] in m.files
    seg = Segmenter.load(out, threads=1)
    seg.state_dir = tmp_path / "state"
    seg.text_tower_precision = "fp32"  # the exact one; int8 is checked at export (>= 0.99)
    assert text.default_precision == "int8" and text.verify["int8"]["min_cosine"] >= 0.99
    module = torch.jit.load(str(text_ts))
    import open_clip

    words = ["a red mug", "COVID-19 test"]
    tokens = torch.from_numpy(np.asarray(open_clip.tokenize(words).numpy(), dtype=np.int64))
    with torch.no_grad():
        ref = module(tokens).numpy()
    got = seg.encode_words(words)
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999
    seg.set_vocabulary(["a red mug", "dog"])
    assert seg.vocabulary == ("a red mug", "dog")
    assert len(list((tmp_path / "state" / "words").rglob("*.npy"))) == 3  # persisted per word
    result = seg.segment(IMAGES["scene-4x3"], prompt=TextPrompt("a red mug"))
    assert result.names == ("a red mug",)


def test_fastsam_export_cli_recognises_yoloe(tmp_path: Path, built) -> None:
    from export.cli import main

    raw = Path(built["11"]["pt"]).parent / "raw.npy"
    rc = main(
        [str(built["11"]["pt"]), "--out", str(tmp_path / "cli"), "--imgsz", "320", "--no-int8",
         "--no-memory", "--vocab", ",".join(NAMES), "--vocab-embeddings", str(raw), "--json",
         str(tmp_path / "s.json")]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["manifest"]["yoloe"]["vocabulary"]["names"] == NAMES
    assert main([str(built["11"]["pt"]), "--out", str(tmp_path / "x"), "--vocab", "dog"]) == 2


def test_bench_vocab_rows(built, demo_bundle: Path) -> None:
    from edge.bench.vocab import run_vocab_bench

    report = run_vocab_bench(
        str(built["11"]["bundle"]), IMAGES["scene-4x3"], [3], threads=1, runs=1, warmup=0,
        fastsam_bundle=str(demo_bundle),
    )  # fmt: skip
    rows = {r["row"]: r for r in report["rows"]}
    assert set(rows) == {"k=1", "k=3", "fastsam"} and rows["k=1"]["vs_k1"] == 1.0
    assert report["words"] == "random embeddings" and report["new_word"] is None


@pytest.mark.parametrize(
    ("source", "embed", "int8", "error"),
    [
        pytest.param("demo", 64, True, None, id="demo-clip"),
        pytest.param("demo", 64, False, None, id="fp32-only"),
        pytest.param("demo", 512, True, "gives D=64, the YOLOE head expects D=512", id="size"),
        pytest.param("no-clip", 64, True, "has no CLIP text tower", id="no-clip"),
        pytest.param("missing", 64, True, "--text-from-bundle: ", id="missing"),
        pytest.param("tampered", 64, True, "--text-from-bundle: .*sha256", id="tampered"),
    ],
)
def test_text_tower_from_another_bundle(
    tmp_path: Path, demo_bundle: Path, detector_only_bundle: Path, source: str, embed: int,
    int8: bool, error: str | None,
) -> None:  # fmt: skip
    """``--text-from-bundle``: a CLIP text tower (the demo's: int32 tokens, pruned vocabulary)
    taken as the YOLOE text tower, checksummed and re-run against its source."""
    import shutil

    from edge.clip import TextTower
    from edge.tokenizer import ClipTokenizer
    from export.common import ExportError
    from export.yoloe import TEXT_FILES, VERIFY_WORDS, copy_text_tower

    src = {"demo": demo_bundle, "no-clip": detector_only_bundle, "missing": tmp_path / "nope"}
    if source == "tampered":
        src["tampered"] = shutil.copytree(demo_bundle, tmp_path / "tampered")
        f = src["tampered"] / read_manifest(demo_bundle).clip.files["text"]["fp32"]
        f.write_bytes(f.read_bytes()[:-1] + b"\0")
    out = tmp_path / "out"
    out.mkdir()
    if error is not None:
        with pytest.raises(ExportError, match=error):
            copy_text_tower(src[source], out, embed, int8)
        return
    section = copy_text_tower(src[source], out, embed, int8)
    clip = read_manifest(demo_bundle).clip
    assert section.model == clip.model and section.tokenizer == clip.tokenizer
    assert section.precisions == (("fp32", "int8") if int8 else ("fp32",))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [clip.tokenizer["bpe"], *(TEXT_FILES[p] for p in section.precisions)]
    )
    assert section.verify["fp32"]["min_cosine"] == 1.0
    if int8:
        assert section.verify["int8"]["min_cosine"] >= 0.99
    tok = ClipTokenizer.from_manifest(out, section.tokenizer)
    got = TextTower(out / section.files["fp32"], tok, 64).encode(list(VERIFY_WORDS))
    ref_path = demo_bundle / clip.files["text"]["fp32"]
    ref = TextTower(ref_path, tok, 64).encode(list(VERIFY_WORDS))
    np.testing.assert_array_equal(got, ref)
