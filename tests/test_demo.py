"""The embedded demo bundles (``edge.demo``): names, resolution, and the open-vocabulary
demo bundle (``demo-yoloe``) finding its words on held-out scenes, given and new."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import tomllib
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

import edge.demo
from edge.bundle import read_manifest, verify_file
from edge.cli import main
from edge.demo import DEMO_BUNDLE_DIR, DEMO_BUNDLES, demo_bundle, is_demo_name, resolve_bundle
from edge.demo.scenes import EVAL_SEED_START, Scene, generate_scene
from edge.errors import BundleError
from edge.metrics import mask_iou_matrix
from edge.segmenter import Segmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
YOLOE_DIR = DEMO_BUNDLES["demo-yoloe"]
MAX_BUNDLE_BYTES = 15 * 10**6
SHIPPED = (YOLOE_DIR / "bundle.json").is_file()
needs_bundle = pytest.mark.skipif(
    not SHIPPED, reason="edge/demo/assets/demo-yoloe is not shipped yet (train_yoloe_demo.py)"
)
SCENES = 5
MIN_LABELLED_RECALL = 0.5
"""Found (mask IoU >= 0.5) *and* labelled with the right word; measured on 300 held-out scenes
in docs/benchmarks.md, kept well below it so that only a broken bundle or runtime fails."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEMO_BUNDLE_DIR),
        ("demo", DEMO_BUNDLE_DIR),
        ("./demo-yoloe", Path("demo-yoloe")),  # a folder of that name, spelled as a path
        ("/srv/bundles/fastsam-s", Path("/srv/bundles/fastsam-s")),
        (Path("demo"), Path("demo")),  # only the string names an embedded bundle
    ],
)
def test_resolve_bundle(value: str | Path | None, expected: Path) -> None:
    assert resolve_bundle(value) == expected
    assert is_demo_name(value) == (isinstance(value, str) and value in ("demo", "demo-yoloe"))


def test_the_yoloe_demo_name_resolves_to_its_assets() -> None:
    assert is_demo_name("demo-yoloe")
    if SHIPPED:
        assert resolve_bundle("demo-yoloe") == YOLOE_DIR
    else:  # the name is known; its assets are said to be missing, not taken as a folder
        with pytest.raises(BundleError, match="demo-yoloe' is missing"):
            resolve_bundle("demo-yoloe")


def test_demo_bundle_refuses_unknown_names_and_missing_assets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="'fastsam' is not one of"):
        demo_bundle("fastsam")
    monkeypatch.setattr(edge.demo, "DEMO_BUNDLES", {"demo": tmp_path})
    with pytest.raises(BundleError, match="is missing; reinstall"):
        demo_bundle()


# --------------------------------------------------------------------------------------------
# the open-vocabulary demo bundle
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tyd() -> ModuleType:
    """``scripts/train_yoloe_demo.py`` (its phrases; importing it needs no torch)."""
    path = REPO_ROOT / "scripts" / "train_yoloe_demo.py"
    spec = importlib.util.spec_from_file_location("train_yoloe_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_bundle
def test_demo_yoloe_manifest_verifies_fits_and_is_packaged(tyd: ModuleType) -> None:
    m = read_manifest(demo_bundle("demo-yoloe"))
    for name in m.files:
        verify_file(YOLOE_DIR, m, name)
    on_disk = sum(p.stat().st_size for p in YOLOE_DIR.iterdir())
    assert on_disk <= MAX_BUNDLE_BYTES, f"{on_disk / 1e6:.2f} MB"
    assert m.yoloe is not None and m.yoloe.text is not None
    assert m.yoloe.embed_dim == 64 and m.yoloe.text.model == "fastsam-demo-clip"
    assert list(m.yoloe.vocabulary) == list(tyd.DEFAULT_VOCAB)
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["edge"]
    for p in YOLOE_DIR.iterdir():
        rel = p.relative_to(REPO_ROOT / "edge").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


@pytest.fixture
def yoloe() -> Segmenter:
    return Segmenter.load(demo_bundle("demo-yoloe"), threads=2)


def _phrases(scene: Scene) -> list[str]:
    return [f"{c} {s}" for c, s in zip(scene.colors, scene.shapes, strict=True)]


def _scenes_with(words: set[str], count: int = SCENES) -> list[Scene]:
    """The first ``count`` held-out scenes (320x320) holding at least one of ``words``."""
    out, seed = [], EVAL_SEED_START
    while len(out) < count:
        scene = generate_scene(seed, 320, 320)
        if words & set(_phrases(scene)):
            out.append(scene)
        seed += 1
    return out


def _labelled_recall(seg: Segmenter, scenes: list[Scene], words: set[str]) -> float:
    """Of the objects whose phrase is in ``words``: found at IoU >= 0.5 by a mask so labelled."""
    hits = total = 0
    for scene in scenes:
        res = seg.segment(scene.image)
        assert set(res.names) == words or set(res.names) >= words
        labels = res.labels
        iou = mask_iou_matrix(scene.masks, res.mask) if len(res) else None
        for k, p in enumerate(_phrases(scene)):
            if p not in words:
                continue
            total += 1
            if iou is not None:
                hits += any(iou[k, j] >= 0.5 and labels[j] == p for j in range(len(res)))
    assert total >= SCENES
    return hits / total


@needs_bundle
def test_default_vocabulary_finds_labelled_masks(yoloe: Segmenter, tyd: ModuleType) -> None:
    words = set(tyd.DEFAULT_VOCAB)
    assert _labelled_recall(yoloe, _scenes_with(words), words) >= MIN_LABELLED_RECALL


@needs_bundle
def test_new_combinations_through_set_vocabulary(yoloe: Segmenter, tyd: ModuleType) -> None:
    """Colour-shape pairs no training scene held, given only at runtime as words."""
    words = set(tyd.HELD_OUT)
    yoloe.set_vocabulary(sorted(words))
    assert _labelled_recall(yoloe, _scenes_with(words), words) >= MIN_LABELLED_RECALL


@needs_bundle
def test_segment_and_info_resolve_the_demo_yoloe_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tyd: ModuleType
) -> None:
    scene = _scenes_with(set(tyd.DEFAULT_VOCAB), 1)[0]
    image = tmp_path / f"scene_{scene.seed:06d}.png"
    cv2.imwrite(str(image), scene.image)
    assert main(["info", "--bundle", "demo-yoloe"]) == 0
    assert "yoloe-demo" in capsys.readouterr().out
    out = tmp_path / "r.json"
    assert main(["segment", str(image), "--bundle", "demo-yoloe", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["vocabulary"] == list(tyd.DEFAULT_VOCAB)
    labels = [m["label"] for m in doc["masks"]]
    assert labels and set(labels) <= set(tyd.DEFAULT_VOCAB)
    assert np.isin([m["class_id"] for m in doc["masks"]], range(len(tyd.DEFAULT_VOCAB))).all()
