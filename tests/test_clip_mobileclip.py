"""MobileCLIP-family CLIP towers: export (re-parameterised), preprocessing, tokenizer, parity.

All tests need torch, open_clip and timm (``export``). The bundle is a real MobileCLIP2-S0
image tower (FastViT-MCi0, 11.4 M parameters, random weights, re-parameterised) at 64 px with
a tiny text tower, exported once per module from a local checkpoint file; timing and the
full-size towers are in ``scripts/bench_clip_towers.py``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bundle import read_manifest
from edge.clip import ClipEncoder
from edge.errors import BundleError, InputError

pytestmark = pytest.mark.export

MODEL = "MobileCLIP2-S0"
TAG = "dfndr2b"
SIZE = 64  # FastViT is fully convolutional up to its pooled head: any multiple of 32 works
SMALL = {
    "embed_dim": 32,
    "vision_cfg": {
        "timm_model_name": "fastvit_mci0",
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": None,
        "image_size": SIZE,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 1,
        "no_causal_mask": True,
    },
}
PROMPTS = ["a photo of a dog", "a red circle", "", "x " * 100]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _perturb_batchnorm(model: Any, seed: int = 0) -> None:
    """Trained-looking BN statistics, so that folding the branches changes real numbers."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """A random MobileCLIP2-S0 (64 px, tiny text tower) saved as a checkpoint file."""
    import open_clip
    import torch

    from export.clip import tag_preprocess

    torch.manual_seed(0)
    shared = tag_preprocess(MODEL)
    assert shared is not None
    model, _, preprocess = open_clip.create_model_and_transforms(
        MODEL, pretrained=None, **SMALL, **shared[1]
    )
    _perturb_batchnorm(model)
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "mobileclip2-s0-small.pt"
    torch.save(model.state_dict(), path)
    return path, model, preprocess


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory, small_model: tuple) -> Path:
    from conftest import strip_clip

    from edge.demo import demo_bundle
    from export.clip import export_clip
    from export.fastsam import file_entry, write_manifest

    dest = tmp_path_factory.mktemp("b") / "bundle"
    shutil.copytree(demo_bundle(), dest)
    base = read_manifest(strip_clip(dest))
    section = export_clip(
        MODEL, str(small_model[0]), dest, model_kwargs=SMALL, progress=False, threads=2
    )
    extra = {"clip": section.to_json()}
    files = dict(base.files)
    for p in sorted(dest.iterdir()):
        if p.name not in files and p.name != "bundle.json":
            files[p.name] = file_entry(p, "asset")
    write_manifest(dest, dataclasses.replace(base, files=files, extra={**base.extra, **extra}))
    return dest


@pytest.mark.parametrize(
    ("model", "mean", "interpolation"),
    [
        ("MobileCLIP-S1", (0.0, 0.0, 0.0), "bilinear"),
        ("MobileCLIP-S2", (0.0, 0.0, 0.0), "bilinear"),
        ("MobileCLIP2-S0", (0.0, 0.0, 0.0), "bilinear"),
        ("MobileCLIP2-S4", (0.48145466, 0.4578275, 0.40821073), "bilinear"),
        ("ViT-B-32-quickgelu", (0.48145466, 0.4578275, 0.40821073), "bicubic"),
    ],
)
def test_tag_preprocess(model: str, mean: tuple[float, ...], interpolation: str) -> None:
    """A checkpoint file gets the preprocessing of the model's tags, not open_clip's default."""
    import open_clip

    from export.clip import tag_preprocess

    shared = tag_preprocess(model)
    assert shared is not None
    tags, kwargs = shared
    assert tags.split(",") == open_clip.list_pretrained_tags_by_model(model)
    assert tuple(kwargs["image_mean"]) == pytest.approx(mean)
    assert kwargs["image_interpolation"] == interpolation
    assert kwargs["image_resize_mode"] == "shortest"


def test_reparameterize_folds_branches(small_model: tuple) -> None:
    import copy

    import torch

    from export.clip import reparameterize

    model = copy.deepcopy(small_model[1])
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE))).float()
    with torch.no_grad():
        before = model.encode_image(x, normalize=True).numpy()
        names = reparameterize(model)
        after = model.encode_image(x, normalize=True).numpy()
    assert {"MobileOneBlock", "RepMixer", "ReparamLargeKernelConv"} <= set(names)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) < convs
    assert _cos(before, after).min() >= 0.9999


def test_manifest(small_bundle: Path) -> None:
    import open_clip

    clip = read_manifest(small_bundle).clip.to_json()
    cfg = open_clip.get_pretrained_cfg(MODEL, TAG)
    assert clip["model"] == MODEL and clip["pretrained"]["kind"] == "file"
    image = clip["image"]
    assert image["from_tags"] == TAG
    assert image["size"] == SIZE and image["max_batch"] == 2
    assert image["mean"] == list(cfg["mean"]) and image["std"] == list(cfg["std"])
    assert image["interpolation"] == cfg["interpolation"] == "bilinear"
    v = clip["verify"]
    assert "MobileOneBlock" in v["reparameterized"] and v["reparam_cosine_min"] >= 0.9999
    assert v["inputs"]["demo_crops"] >= 6 and v["tokenizer_parity"] is True
    assert v["image_fp32"]["demo_crops_cosine_min"] >= 0.9999
    assert v["image_int8"]["demo_crops_cosine_min"] >= 0.99
    assert clip["precisions"] == ["fp32", "int8"] and "int8_refused" not in v
    assert clip["tokenizer"]["context_length"] == 77 and clip["tokenizer"]["pad_id"] == 0
    # the token table (a Gather, most of a text tower's bytes) is quantized with the MatMuls
    assert "Gather" in clip["quantization"]["op_types_by_tower"]["text"]
    sizes = {p: (small_bundle / f"clip-text.{p}.onnx").stat().st_size for p in ("fp32", "int8")}
    assert sizes["int8"] < 0.35 * sizes["fp32"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_image_parity_demo_crops(small_bundle: Path, small_model: tuple, precision: str) -> None:
    """Demo-scene crops -> edge preprocessing -> ONNX vs PIL -> open_clip transform -> torch
    (the original, not re-parameterised model)."""
    import torch
    from PIL import Image

    from export.clip import demo_crops

    _, model, preprocess = small_model
    enc = ClipEncoder.load(small_bundle, read_manifest(small_bundle), precision, threads=2)
    assert enc.max_batch == 2
    crops = demo_crops((1_700_002, 1_700_003))
    got = enc.encode_images(crops)
    x = torch.stack([preprocess(Image.fromarray(c)) for c in crops])
    with torch.no_grad():
        ref = model.encode_image(x, normalize=True).numpy()
    cos = _cos(got, ref)
    print(f"MobileCLIP2-S0 image {precision}: {len(crops)} crops, cosine min {cos.min():.6f}")
    assert len(crops) > enc.max_batch  # several session calls
    assert cos.min() >= (0.9999 if precision == "fp32" else 0.99)
    bad = [*crops[:9], np.zeros((2, 2), np.uint8)]
    with pytest.raises(InputError, match=r"crops\[9\]"):  # index in the whole list
        enc.encode_images(bad)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_text_parity(small_bundle: Path, small_model: tuple, precision: str) -> None:
    """No causal mask (MobileCLIP's text tower): padding with 0 must match open_clip."""
    import open_clip
    import torch

    enc = ClipEncoder.load(small_bundle, read_manifest(small_bundle), precision, threads=2)
    tokens = open_clip.get_tokenizer(MODEL)(PROMPTS)
    assert np.array_equal(enc.tokenize(PROMPTS), tokens.numpy())
    with torch.no_grad():
        ref = small_model[1].encode_text(tokens, normalize=True).numpy()
    cos = _cos(enc.encode_text(PROMPTS), ref)
    assert cos.min() >= (0.9999 if precision == "fp32" else 0.99)


@pytest.mark.parametrize("value", [0, -1, 1025, 2.5, True, "8"])
def test_bad_max_batch(small_bundle: Path, tmp_path: Path, value: Any) -> None:

    bad = tmp_path / "b"
    shutil.copytree(small_bundle, bad)
    m = json.loads((bad / "bundle.json").read_text())
    m["clip"]["image"]["max_batch"] = value
    (bad / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="clip.image.max_batch"):
        ClipEncoder.load(bad, read_manifest(bad))


def test_int8_gate(small_model: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 encoder below the cosine floor is left out, fp32 kept (``--clip-precision
    int8-only`` raises instead, after the same check)."""
    import export.clip as ec

    monkeypatch.setattr(ec, "MIN_INT8_COSINE", 1.5)  # nothing can pass
    out = tmp_path / "a"
    out.mkdir()
    section = ec.export_clip(
        MODEL, str(small_model[0]), out, model_kwargs=SMALL, progress=False, threads=1
    )
    assert section.precisions == ("fp32",) and section.quantization is None
    assert any("image int8" in r for r in section.verify["int8_refused"])
    assert not list(out.glob("clip-*.int8.onnx"))


def test_text_session_on_demand(small_bundle: Path) -> None:
    """keep_text=False: sessions on demand, text dropped after each call, same embeddings."""
    m = read_manifest(small_bundle)
    kept = ClipEncoder.load(small_bundle, m, "int8", threads=1)
    lazy = ClipEncoder.load(small_bundle, m, "int8", threads=1, keep_text=False)
    assert kept.text_session is not None and lazy.text_session is None
    # the BPE tables (~28 MiB) come and go with the text session
    assert kept.tokenizer is not None and lazy.tokenizer is None
    np.testing.assert_array_equal(lazy.tokenize(PROMPTS), kept.tokenize(PROMPTS))
    # conv tower: the dense session encodes crops too, created at the first image encoding
    assert lazy.dense_session is None and lazy.image_session is None
    assert kept.dense_session is not None and kept.image_session is None
    np.testing.assert_array_equal(lazy.encode_text(PROMPTS), kept.encode_text(PROMPTS))
    assert lazy.text_session is None and lazy.dense_session is None and lazy.tokenizer is None
    assert lazy.encode_text(["a dog"]).shape == (1, 32) and lazy.text_session is None
    crops = [np.full((40, 30, 3), v, np.uint8) for v in (0, 90, 200)]
    np.testing.assert_array_equal(lazy.encode_images(crops), kept.encode_images(crops))
    assert lazy.dense_session is not None and lazy.text_session is None
    assert lazy.image_session is None
    # CLIP's sessions give their activations back after each run (no memory pattern)
    assert lazy.transient and not lazy.dense_session.get_session_options().enable_mem_pattern


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_dense_encoder(small_bundle: Path, precision: str) -> None:
    """The dense map of a conv tower: its spatial mean is the pooled embedding; a frame is
    resized to the long side and padded to whole cells."""
    from edge.session import create_session
    from export.clip import demo_crops

    dense = read_manifest(small_bundle).clip.to_json()["dense"]
    assert dense["stride"] == 32 and dense["long_side"] == 640
    assert set(dense["files"]) == {"fp32", "int8"}
    assert dense["verify"]["pool_vs_embedding_cosine_min"] >= 0.9999
    assert dense["verify"]["fp32"]["location_cosine_min"] >= 0.9999
    enc = ClipEncoder.load(small_bundle, read_manifest(small_bundle), precision, threads=2)
    assert enc.has_dense and enc.dense_path is not None
    assert enc.dense_path.name == f"clip-dense.{precision}.onnx"
    px = enc.preprocess_crops(demo_crops((1_700_002,)))
    sess = create_session(enc.dense_path, threads=2)
    pooled = np.concatenate([sess.run(None, {"pixels": p[None]})[0].mean(axis=(2, 3)) for p in px])
    # crops through the dense session (mean over locations) = the image encoder's embeddings
    image = create_session(small_bundle / f"clip-image.{precision}.onnx", threads=2)
    direct = np.concatenate([image.run(None, {"pixels": p[None]})[0] for p in px])
    assert _cos(pooled, direct).min() >= (0.9999 if precision == "fp32" else 0.99)
    np.testing.assert_allclose(  # the runtime encodes crops through the dense session
        enc.encode_pixels(px), pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-6
    )
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    dm = enc.encode_dense(frame)
    assert dm.grid_hw == (15, 20) and dm.scale == 1.0 and dm.stride == 32  # 640x480, whole cells
    assert dm.features.shape == (15, 20, enc.embed_dim) and dm.features.dtype == np.float32
    assert enc.encode_dense(frame, long_side=320).grid_hw == (8, 10)  # 320x240 -> 320x256
    assert enc.encode_dense(frame, long_side=480).grid_hw == (12, 15)  # 480x360 -> 480x384
    with pytest.raises(InputError):
        enc.encode_dense(np.zeros((4, 4), np.uint8))


def test_segment_text_dense_prefilter(small_bundle: Path) -> None:
    """Segmenter: ``auto`` takes the dense path on a conv tower and encodes the shortlist
    only; ``score`` with ``top_k=None`` encodes every candidate."""
    from edge.demo.scenes import generate_scene
    from edge.prompts import TextPrompt
    from edge.segmenter import Segmenter
    from edge.textmatch import TEXT_MIN_AREA

    seg = Segmenter.load(small_bundle, threads=2)
    sc = generate_scene(1_000_123, 320, 320, min_objects=10, max_objects=14)
    everything = seg.segment(sc.image)
    n = int((everything.area > TEXT_MIN_AREA).sum())
    assert n > 3
    seg.text = replace(seg.text, shortlist=2)
    prompt = TextPrompt(text="a red circle")
    dense = seg.segment(sc.image, prompt=prompt)
    assert len(dense) == 1 and dense.metadata["text_scores"][0]["candidates"] == 2
    seg.text = replace(seg.text, prefilter="score", top_k=None)
    full = seg.segment(sc.image, prompt=prompt)
    assert full.metadata["text_scores"][0]["candidates"] == n
    seg.text = replace(seg.text, shortlist=n)  # every candidate shortlisted: the all-masks choice
    seg.text = replace(seg.text, prefilter="dense")
    same = seg.segment(sc.image, prompt=prompt)
    np.testing.assert_array_equal(same.mask, full.mask)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(stride=0), "clip.dense.stride"),
        (lambda d: d.update(long_side="320"), "clip.dense.long_side"),
        (lambda d: d.pop("files"), "clip.dense.files is missing"),
        (lambda d: d.update(files={}), "clip.dense.files: expected an object of precision"),
        (lambda d: d["files"].update(fp32="missing.onnx", int8="missing.onnx"), "missing"),
    ],
)
def test_bad_dense_section(small_bundle: Path, tmp_path: Path, edit: Any, match: str) -> None:
    bad = tmp_path / "b"
    shutil.copytree(small_bundle, bad)
    m = json.loads((bad / "bundle.json").read_text())
    edit(m["clip"]["dense"])
    (bad / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=match):
        ClipEncoder.load(bad, read_manifest(bad))


def test_info_names_the_prefilter(small_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    from edge.cli import main

    assert main(["info", "--bundle", str(small_bundle), "--json", "-"]) in (0, 1)
    text = json.loads(capsys.readouterr().out)["text_prompts"]
    assert text["dense_prefilter"] is True and "prefilter: dense" in text["summary"]
