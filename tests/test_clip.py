"""CLIP for text prompts: export (export/clip.py) and the torch-free encoder (edge/clip.py).

Unmarked tests need only numpy/onnxruntime/OpenCV (the runtime CI envs, which do not install
the ``text`` extra); tests marked ``export`` need torch, open_clip and Pillow. Most export tests
use a tiny open_clip config (random weights, exported in seconds); one ``slow`` test exports
the real ViT-B-32-quickgelu (random weights: no network here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.bundle import BundleManifest, InputSpec, read_manifest, sha256_file, verify_file
from edge.clip import (
    NO_CLIP_HINT,
    ClipEncoder,
    ClipPreprocess,
    pil_resize,
    resized_shortest,
    vertical_first,
)
from edge.errors import BundleError, InputError
from edge.tokenizer import ClipTokenizer, read_merges

export = pytest.mark.export

MODEL = "ViT-B-32-quickgelu"
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PROMPTS = ["a photo of a dog", "the black cat", "a red car next to 2 trees", "", "x " * 100]
# open_clip's transform on a PIL image is reproduced bit for bit; 1e-6 leaves room only for a
# differently ordered float32 operation, not for a single uint8 level (0.0146 after /std)
MAX_PIXEL_DIFF = 1e-6


def pattern(h: int, w: int) -> np.ndarray:
    """Deterministic uint8 RGB test image (no RNG: identical on every numpy version)."""
    y, x = np.mgrid[0:h, 0:w]
    v = (x[..., None] * 37 + y[..., None] * 91 + (x * y)[..., None] * 7 + np.arange(3) * 85) % 256
    return v.astype(np.uint8)


# (input HxW, output HxW, filter) -> sha256[:16] of PIL.Image.resize's bytes (Pillow 13.0)
GOLDEN_RESIZE = {
    ((300, 400), (224, 298), "bicubic"): "49aea85c696e4013",
    ((90, 60), (336, 224), "bicubic"): "8838e6c8710f8e84",
    ((500, 120), (933, 224), "bicubic"): "5837c9bd011e1427",
    ((400, 100), (100, 90), "bicubic"): "a4df3c61c6c6d00c",  # vertical pass first
    ((200, 180), (60, 150), "bilinear"): "76e952ec9787f33a",  # vertical pass first
    ((37, 251), (224, 1519), "bicubic"): "d716da0198b6563c",
    ((224, 224), (224, 224), "bicubic"): "5e1e0f839f2dabc3",
}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """Random-size crops: tiny, thin, square, larger than 224; smooth and noisy content."""
    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (3, 700), (700, 3), (64, 64), (224, 224), (225, 224), (480, 640)]
    while len(sizes) < n:
        sizes.append((int(rng.integers(1, 600)), int(rng.integers(1, 600))))
    out = []
    for i, (h, w) in enumerate(sizes[:n]):
        img = pattern(h, w) if i % 2 else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append(img)
    return out


# --------------------------------------------------------------------------------------------
# runtime-only (numpy / onnxruntime / OpenCV)


def _bare_manifest(**extra: Any) -> BundleManifest:
    return BundleManifest(
        name="t",
        input=InputSpec(dynamic=False, imgsz=(640, 640)),
        files={},
        precisions=("fp32",),
        default_precision="fp32",
        extra=extra,
    )


def test_missing_clip_section(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as ei:
        ClipEncoder.load(tmp_path, _bare_manifest())
    assert str(ei.value) == NO_CLIP_HINT
    assert "--clip ViT-B-32-quickgelu --clip-pretrained openai" in NO_CLIP_HINT


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"precisions": ["fp32"]}, "clip.files is missing"),
        ({"files": {}, "precisions": ["fp16"]}, "clip.precisions"),
        (
            {"files": {}, "precisions": ["fp32"], "default_precision": "int8"},
            "clip.default_precision",
        ),
    ],
)
def test_malformed_clip_section(section: dict, field: str) -> None:
    """A malformed section fails when bundle.json is parsed, naming the field."""
    from edge.bundle import ClipSection

    with pytest.raises(BundleError, match=field):
        ClipSection.from_json(section)


@pytest.mark.parametrize("missing", ["ftfy", "regex"])
def test_text_extra_missing(missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import now raises ImportError
    with pytest.raises(BundleError) as ei:
        ClipTokenizer.from_file(tmp_path / "bpe.txt.gz")
    msg = str(ei.value)
    assert repr(missing) in msg and 'pip install "fastsam-edge[text]"' in msg


def test_edge_imports_without_text_extra_or_torch() -> None:
    code = (
        "import sys\n"
        "for m in ('ftfy', 'regex', 'torch', 'open_clip', 'PIL'):\n"
        "    sys.modules[m] = None\n"
        "import edge, edge.clip, edge.tokenizer\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_missing_bpe_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="BPE merges file .* is missing; re-export"):
        read_merges(tmp_path / "clip-bpe_simple_vocab_16e6.txt.gz")


def test_pil_resize_golden() -> None:
    for ((ih, iw), (oh, ow), interp), digest in GOLDEN_RESIZE.items():
        out = pil_resize(pattern(ih, iw), (oh, ow), interp)
        assert out.shape == (oh, ow, 3) and out.dtype == np.uint8
        assert _digest(out) == digest, ((ih, iw), (oh, ow), interp)


def test_pil_resize_window_equals_full() -> None:
    img = pattern(173, 301)
    for size, order in (
        ((224, 389), "pillow13"),
        ((40, 300), "pillow13"),
        ((40, 300), "horizontal_first"),
    ):
        full = pil_resize(img, size, order=order)
        win = pil_resize(img, size, window=(7, 11, 20, 30), order=order)
        assert np.array_equal(win, full[7:27, 11:41])


def test_vertical_first_rule() -> None:
    assert vertical_first((400, 100), (100, 90), "pillow13")  # 300 > 2 * 10
    assert not vertical_first((400, 100), (100, 90), "horizontal_first")
    assert not vertical_first((300, 100), (100, 0), "pillow13")  # 200 == 2 * 100: not more
    assert vertical_first((301, 100), (100, 0), "pillow13")
    assert not vertical_first((100, 100), (200, 300), "pillow13")  # height grows


def test_resized_shortest_matches_torchvision_rule() -> None:
    assert resized_shortest(480, 640, 224) == (224, 298)  # int(224 * 640 / 480) = 298
    assert resized_shortest(640, 480, 224) == (298, 224)
    assert resized_shortest(1, 1000, 224) == (224, 224000)
    assert resized_shortest(100, 100, 224) == (224, 224)


def test_preprocess_identity_and_shapes() -> None:
    pre = ClipPreprocess()
    img = pattern(224, 224)
    out = pre([img, pattern(3, 900), pattern(900, 3)])
    assert out.shape == (3, 3, 224, 224) and out.dtype == np.float32
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    want = ((img.astype(np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)
    assert np.array_equal(out[0], want)
    assert pre([]).shape == (0, 3, 224, 224)


@pytest.mark.parametrize(
    "crop",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        "not an array",
    ],
)
def test_preprocess_rejects_bad_crops(crop: Any) -> None:
    with pytest.raises(InputError, match=r"crops\[1\]"):
        ClipPreprocess()([pattern(5, 5), crop])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resize_mode": "longest"}, "resize_mode"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"size": [224, 256]}, "not square"),
        ({"resize_order": "pillow9"}, "resize_order"),
        ({"mean": [0.5]}, "3 mean/std"),
        ({"std": None}, "malformed"),
    ],
)
def test_preprocess_section_validation(change: dict[str, Any], match: str) -> None:
    base = {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert ClipPreprocess.from_section(base).size == 224
    with pytest.raises(BundleError, match=match):
        ClipPreprocess.from_section({**base, **change})


# --------------------------------------------------------------------------------------------
# export side (torch, open_clip, Pillow)


def make_clip_bundle(dest: Path, clip: Any) -> Path:
    """A bundle = the demo detector bundle + CLIP (``export_clip`` with the
    :class:`export.clip.ClipOptions` ``clip``), written like ``export_bundle``."""
    from conftest import strip_clip

    from edge.demo import demo_bundle
    from export.clip import export_clip
    from export.fastsam import file_entry, write_manifest

    shutil.copytree(demo_bundle(), dest)
    base = read_manifest(strip_clip(dest))  # the demo bundle ships its own tiny CLIP
    section = export_clip(
        clip.model_name, clip.pretrained, dest, clip.int8, clip.keep_fp32,
        model_kwargs=clip.model_kwargs, threads=clip.threads, progress=clip.progress,
    )  # fmt: skip
    extra = {"clip": section.to_json()}
    files = dict(base.files)
    for p in sorted(dest.iterdir()):
        if p.name not in files and p.name != "bundle.json":
            files[p.name] = file_entry(p, "asset")
    write_manifest(dest, dataclasses.replace(base, files=files, extra={**base.extra, **extra}))
    return dest


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """A random tiny open_clip model saved as a local checkpoint (exercises PATH weights)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=None, **TINY)
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return path, model, preprocess


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: tuple) -> Path:
    from export.clip import ClipOptions

    path = tiny_model[0]
    clip = ClipOptions(MODEL, str(path), model_kwargs=TINY, progress=False, threads=2)
    return make_clip_bundle(tmp_path_factory.mktemp("b") / "bundle", clip)


@export
def test_manifest_clip_section(tiny_bundle: Path, tiny_model: tuple) -> None:
    import open_clip

    m = read_manifest(tiny_bundle)
    clip = m.clip.to_json()
    assert clip["model"] == MODEL and clip["embed_dim"] == 32
    assert clip["pretrained"] == {
        "kind": "file",
        "file": "tiny-clip.pt",
        "sha256": sha256_file(tiny_model[0]),
        "bytes": tiny_model[0].stat().st_size,
    }
    assert clip["precisions"] == ["fp32", "int8"] and clip["default_precision"] == "fp32"
    # a ViT pools through its class token: no dense decomposition, the score prefilter
    assert "dense" not in clip and not list(tiny_bundle.glob("clip-dense.*"))
    for tower in ("image", "text"):
        for prec in ("fp32", "int8"):
            name = clip["files"][tower][prec]
            assert name == f"clip-{tower}.{prec}.onnx"
            verify_file(tiny_bundle, m, name)
    verify_file(tiny_bundle, m, clip["tokenizer"]["bpe"])
    cfg = open_clip.get_model_preprocess_cfg(tiny_model[1])
    img = clip["image"]
    assert img["size"] == 64 and tuple(img["mean"]) == tuple(cfg["mean"])
    assert tuple(img["std"]) == tuple(cfg["std"])
    assert (img["interpolation"], img["resize_mode"], img["crop"]) == (
        "bicubic",
        "shortest",
        "center",
    )
    tok = clip["tokenizer"]
    assert (tok["context_length"], tok["sot_id"], tok["eot_id"], tok["pad_id"]) == (
        77,
        49406,
        49407,
        0,
    )
    v = clip["verify"]
    assert v["tokenizer_parity"] is True
    assert v["image_fp32"]["cosine_min"] >= 0.9999 and v["text_fp32"]["cosine_min"] >= 0.9999
    assert "cosine_min" in v["image_int8"] and "cosine_min" in v["text_int8"]


@export
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_text_parity(tiny_bundle: Path, tiny_model: tuple, precision: str) -> None:
    import open_clip
    import torch

    enc = ClipEncoder.load(tiny_bundle, read_manifest(tiny_bundle), precision, threads=2)
    got = enc.encode_text(PROMPTS)
    assert got.shape == (len(PROMPTS), 32) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    tokens = open_clip.get_tokenizer(MODEL)(PROMPTS)
    assert np.array_equal(enc.tokenize(PROMPTS), tokens.numpy())
    with torch.no_grad():
        ref = tiny_model[1].encode_text(tokens, normalize=True).numpy()
    cos = _cos(got, ref)
    print(f"text {precision}: cosine vs torch min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= (0.9999 if precision == "fp32" else 0.99)
    assert enc.encode_text([]).shape == (0, 32)


@export
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_image_parity_end_to_end(tiny_bundle: Path, tiny_model: tuple, precision: str) -> None:
    """Crops -> edge preprocessing -> ONNX vs PIL -> open_clip transform -> torch."""
    import torch
    from PIL import Image

    _, model, preprocess = tiny_model
    enc = ClipEncoder.load(tiny_bundle, read_manifest(tiny_bundle), precision, threads=2)
    crops = _crops(12, seed=1)
    got = enc.encode_images(crops)
    assert got.shape == (12, 32) and got.dtype == np.float32
    x = torch.stack([preprocess(Image.fromarray(c)) for c in crops])
    with torch.no_grad():
        ref = model.encode_image(x, normalize=True).numpy()
    cos = _cos(got, ref)
    print(f"image {precision}: cosine vs torch min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= (0.9999 if precision == "fp32" else 0.99)
    enc.max_batch = 5  # chunked calls: fp32 is batch-independent; dynamic int8 is not (its
    # activation ranges are computed per call, over the whole batch)
    chunked = enc.encode_images(crops)
    if precision == "fp32":
        np.testing.assert_allclose(chunked, got, atol=1e-5)
    else:
        assert _cos(chunked, got).min() >= 0.99
    assert enc.encode_images([]).shape == (0, 32)


@export
def test_preprocess_matches_open_clip_pil(tiny_model: tuple) -> None:
    """Edge preprocessing vs open_clip's PIL transform (224 px, bicubic, shortest + crop)."""
    import cv2
    import PIL
    from open_clip import image_transform
    from PIL import Image

    pre224 = image_transform(224, is_train=False)  # OpenAI mean/std, bicubic, shortest
    print(pre224)
    order = "pillow13" if int(PIL.__version__.split(".")[0]) >= 13 else "horizontal_first"
    edge_pre = ClipPreprocess(resize_order=order)
    crops = _crops(80, seed=2)
    ref = np.stack([pre224(Image.fromarray(c)).numpy() for c in crops])
    got = edge_pre(crops)
    diff = np.abs(got - ref)
    # for context: the OpenCV approximation of PIL's resize (INTER_AREA down, INTER_CUBIC up)
    approx = []
    for c in crops:
        nh, nw = resized_shortest(c.shape[0], c.shape[1], 224)
        interp = cv2.INTER_AREA if nh * nw < c.shape[0] * c.shape[1] else cv2.INTER_CUBIC
        r = cv2.resize(c, (nw, nh), interpolation=interp)
        t, left = int(round((nh - 224) / 2)), int(round((nw - 224) / 2))
        approx.append(edge_pre([r[t : t + 224, left : left + 224]])[0])
    cv_diff = np.abs(np.stack(approx) - ref)
    print(
        f"preprocess vs open_clip PIL: mean |d| {diff.mean():.3g} max {diff.max():.3g}; "
        f"OpenCV approximation: mean {cv_diff.mean():.4f} max {cv_diff.max():.3f}"
    )
    assert diff.max() <= MAX_PIXEL_DIFF


@export
def test_pil_resize_matches_pillow() -> None:
    import PIL
    from PIL import Image

    order = "pillow13" if int(PIL.__version__.split(".")[0]) >= 13 else "horizontal_first"
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
    rng = np.random.default_rng(3)
    for _ in range(150):
        ih, iw, oh, ow = (int(v) for v in rng.integers(1, 260, size=4))
        img = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        for name, pf in filters.items():
            ref = np.asarray(Image.fromarray(img).resize((ow, oh), pf))
            assert np.array_equal(pil_resize(img, (oh, ow), name, order=order), ref), (
                ih,
                iw,
                oh,
                ow,
                name,
            )
    for ((ih, iw), (oh, ow), interp), digest in GOLDEN_RESIZE.items():
        ref = np.asarray(Image.fromarray(pattern(ih, iw)).resize((ow, oh), filters[interp]))
        assert np.array_equal(pil_resize(pattern(ih, iw), (oh, ow), interp, order=order), ref)
        if order == "pillow13":
            assert _digest(ref) == digest


@export
def test_missing_or_modified_files(tiny_bundle: Path, tmp_path: Path) -> None:
    m = read_manifest(tiny_bundle)
    clip = m.clip.to_json()
    with pytest.raises(BundleError, match="not in this bundle"):
        ClipEncoder.load(tiny_bundle, m, "fp16")
    broken = tmp_path / "no-bpe"
    shutil.copytree(tiny_bundle, broken)
    (broken / clip["tokenizer"]["bpe"]).unlink()
    with pytest.raises(BundleError, match="missing"):
        ClipEncoder.load(broken, read_manifest(broken))
    changed = tmp_path / "changed"
    shutil.copytree(tiny_bundle, changed)
    onnx_file = changed / clip["files"]["image"]["fp32"]
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        ClipEncoder.load(changed, read_manifest(changed), "fp32")


@export
def test_int8_only(tiny_model: tuple, tmp_path: Path) -> None:
    from export.clip import ClipOptions

    clip = ClipOptions(
        MODEL, str(tiny_model[0]), keep_fp32=False, model_kwargs=TINY, progress=False
    )
    out = make_clip_bundle(tmp_path / "b", clip)
    m = read_manifest(out)
    clip = m.clip.to_json()
    assert clip["precisions"] == ["int8"] and clip["default_precision"] == "int8"
    assert not list(out.glob("clip-*.fp32.onnx"))
    assert sorted(p.name for p in out.glob("clip-*")) == [
        "clip-bpe_simple_vocab_16e6.txt.gz",
        "clip-image.int8.onnx",
        "clip-text.int8.onnx",
    ]
    enc = ClipEncoder.load(out, m, threads=1)
    assert enc.precision == "int8" and enc.encode_text(["a dog"]).shape == (1, 32)
    with pytest.raises(BundleError, match="'fp32' is not in this bundle"):
        ClipEncoder.load(out, m, "fp32")


@export
def test_pretrained_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip.factory

    from edge.errors import FastSAMEdgeError
    from export.clip import export_clip, load_model
    from export.common import ExportError

    assert issubclass(ExportError, FastSAMEdgeError)  # one error base: the CLI reports it
    with pytest.raises(ExportError, match="unknown open_clip model"):
        load_model("ViT-Nope", None)
    with pytest.raises(ExportError, match="does not exist"):
        load_model(MODEL, str(tmp_path / "missing.pt"))
    with pytest.raises(ExportError, match="neither a file nor a pretrained tag"):
        load_model(MODEL, "no_such_tag")
    with pytest.raises(ExportError, match="quick_gelu"):
        load_model("ViT-B-32", "openai")  # OpenAI weights need QuickGELU

    def offline(*args: Any, **kwargs: Any) -> str:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(ExportError) as ei:
        load_model(MODEL, "openai")
    msg = str(ei.value)
    assert "'openai'" in msg and "--clip-pretrained /path/to/" in msg and "local cache" in msg
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="is not a checkpoint"):
        load_model(MODEL, str(bad), TINY)
    with pytest.raises(ExportError, match="both were dropped"):
        export_clip(MODEL, None, tmp_path, int8=False, keep_fp32=False)


@export
def test_cli_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import main

    weights = tmp_path / "w.pt"
    cases = [
        (["--clip", MODEL], "needs --clip-pretrained"),
        (["--precision", "int8-only"], "need --clip MODEL"),
        (["--clip", MODEL, "--clip-pretrained", str(tmp_path / "none.pt")], "does not exist"),
        (["--clip", "ViT-B-32", "--clip-pretrained", "openai"], "quick_gelu"),
    ]
    for flags, match in cases:
        assert main([str(weights), "--out", str(tmp_path / "o"), *flags]) == 2
        assert match in capsys.readouterr().err


@export
def test_export_bundle_with_clip(tiny_model: tuple, tmp_path: Path) -> None:
    """CLIP through ``export_bundle(clip=...)`` (tiny detector)."""
    pytest.importorskip("ultralytics")
    from export.archs import make_checkpoint
    from export.clip import ClipOptions
    from export.fastsam import export_bundle

    ckpt = make_checkpoint("fastsam-n", tmp_path / "tiny.pt", seed=3)
    clip = ClipOptions(MODEL, str(tiny_model[0]), model_kwargs=TINY, progress=False)
    # int8=False: the detector's int8 step is tested in test_export.py
    out = export_bundle(
        ckpt, tmp_path / "bundle", imgsz=160, clip=clip, int8=False, measure_memory=False
    )
    m = read_manifest(out)
    assert m.clip is not None
    for name in (
        "clip-image.fp32.onnx",
        "clip-text.int8.onnx",
        "clip-bpe_simple_vocab_16e6.txt.gz",
    ):
        verify_file(out, m, name)
    enc = ClipEncoder.load(out, m)
    assert enc.encode_images([pattern(50, 80)]).shape == (1, 32)


@export
@pytest.mark.slow
def test_vit_b32_export_cli(tmp_path: Path) -> None:
    """The real FastSAM CLIP architecture (random weights) through ``fastsam-export --clip``."""
    pytest.importorskip("ultralytics")
    from export.archs import make_checkpoint

    ckpt = make_checkpoint("fastsam-n", tmp_path / "tiny.pt", seed=3)
    out = tmp_path / "b32"
    cmd = [sys.executable, "-m", "export.cli", str(ckpt), "--out", str(out), "--imgsz", "160"]
    cmd += ["--no-int8", "--clip", MODEL, "--clip-pretrained", "none"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"clip: {MODEL} ['fp32', 'int8']; cosine vs torch: image_fp32 1.0000" in proc.stdout
    m = read_manifest(out)
    clip = m.clip.to_json()
    v = clip["verify"]
    sizes = {name: m.files[name].bytes for name in sorted(m.files) if name.startswith("clip-")}
    print(f"ViT-B-32 verify: {v}\nsizes: {sizes}")
    assert clip["embed_dim"] == 512 and clip["image"]["size"] == 224
    assert clip["pretrained"] == {"kind": "none"}
    assert v["image_fp32"]["cosine_min"] >= 0.9999 and v["text_fp32"]["cosine_min"] >= 0.9999
    assert v["image_int8"]["cosine_min"] >= 0.99 and v["text_int8"]["cosine_min"] >= 0.99
    assert sizes["clip-image.int8.onnx"] < sizes["clip-image.fp32.onnx"] / 3
    for precision in ("fp32", "int8"):
        enc = ClipEncoder.load(out, m, precision, threads=2)
        img = enc.encode_images(_crops(3))
        txt = enc.encode_text(PROMPTS[:2])
        assert img.shape == (3, 512) and txt.shape == (2, 512)


def _tiny_tokenizer(cache_entries: int = 50, cache_bytes: int = 8 << 10) -> ClipTokenizer:
    """A tokenizer without the text extra: identity cleaning, a letters/digits/other pattern,
    a few merges (``bpe`` and the row logic are what is tested)."""
    import re
    import types

    from edge.lru import BoundedLRU
    from edge.tokenizer import EOT_TOKEN, SOT_TOKEN, bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("a", "b")]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab += [SOT_TOKEN, EOT_TOKEN]
    encoder = {t: i for i, t in enumerate(vocab)}
    return ClipTokenizer(
        encoder=encoder,
        bpe_ranks={m: i for i, m in enumerate(merges)},
        sot_id=encoder[SOT_TOKEN],
        eot_id=encoder[EOT_TOKEN],
        _ftfy=types.SimpleNamespace(fix_text=lambda s: s),
        _pat=re.compile(r"<start_of_text>|<end_of_text>|[a-z]+|[0-9]|[^\sa-z0-9]+"),
        _cache=BoundedLRU(cache_entries, cache_bytes),
    )


def test_bpe_cache_stays_bounded_under_a_flood_of_new_words() -> None:
    tok = _tiny_tokenizer(cache_entries=50, cache_bytes=8 << 10)
    rng = np.random.default_rng(0)
    for _ in range(300):
        words = ["".join(rng.choice(list("abcdefghij"), 8)) for _ in range(20)]
        tok([" ".join(words)])
        stats = tok.cache_stats
        assert stats["entries"] <= 50 and stats["bytes"] <= 8 << 10
    assert tok.cache_stats["evictions"] > 2500  # ~10 words a row (77 ids), 300 rows
    # the special tokens never depend on the cache
    assert tok(["<start_of_text>"])[0, 1] == tok.sot_id


def test_long_text_encodes_only_what_its_row_keeps() -> None:
    tok = _tiny_tokenizer(cache_entries=10_000, cache_bytes=16 << 20)
    words = [f"w{i:05d}".replace("0", "q") for i in range(5000)]  # all different
    text = " ".join(words)
    row = tok([text])[0]
    assert tok.cache_stats["entries"] <= tok.context_length  # not 5000 words
    full = [tok.sot_id, *tok.encode(text), tok.eot_id][: tok.context_length]
    full[-1] = tok.eot_id
    np.testing.assert_array_equal(row, full)  # the same row as encoding everything
    assert tok.encode("the ab", max_ids=1) == tok.encode("the ab")[:1]
