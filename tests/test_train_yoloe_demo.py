"""Tests for scripts/train_yoloe_demo.py: phrases and held-out split, the per-word tally
(numpy only), and a smoke run (train, export, evaluate; export extra)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edge.demo.scenes import COLORS, SHAPES, iter_scenes

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "train_yoloe_demo.py"


@pytest.fixture(scope="module")
def tyd() -> ModuleType:
    """The script as a module (numpy/OpenCV/onnxruntime only; torch is imported lazily)."""
    spec = importlib.util.spec_from_file_location("train_yoloe_demo", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_held_out_split_covers_every_colour_and_shape(tyd: ModuleType) -> None:
    assert len(tyd.ALL_PHRASES) == len(COLORS) * len(SHAPES)
    assert set(tyd.TRAIN_PHRASES) | set(tyd.HELD_OUT) == set(tyd.ALL_PHRASES)
    assert not set(tyd.TRAIN_PHRASES) & set(tyd.HELD_OUT)
    assert {p.split()[0] for p in tyd.HELD_OUT} == set(COLORS)
    assert {p.split()[1] for p in tyd.HELD_OUT} == set(SHAPES)
    assert tyd.DEFAULT_VOCAB == tyd.ALL_PHRASES  # every demo object has its name in it


def test_classify_skips_scenes_with_a_held_out_phrase(tyd: ModuleType) -> None:
    kept = skipped = 0
    for scene in iter_scenes(0, 40, width=160, height=160):
        phrases = [tyd.phrase(c, s) for c, s in zip(scene.colors, scene.shapes, strict=True)]
        ids = tyd.classify(scene)
        if any(p in tyd.HELD_OUT for p in phrases):
            assert ids is None
            skipped += 1
        else:
            assert [tyd.TRAIN_PHRASES[i] for i in ids] == phrases
            kept += 1
    assert kept and skipped  # both kinds occur in 40 scenes


def _square(y: int, x: int, size: int = 10, hw: int = 40) -> np.ndarray:
    m = np.zeros((hw, hw), bool)
    m[y : y + size, x : x + size] = True
    return m


def test_word_tally_recall_label_accuracy_precision(tyd: ModuleType) -> None:
    tally = tyd.WordTally(["red circle", "blue star"])
    gt = np.stack([_square(0, 0), _square(20, 20), _square(0, 25)])
    gt_words = ["red circle", "blue star", "green hexagon"]  # the last word is not in the vocab
    # found with the right word; found with the wrong word; a mask on nothing
    pred = np.stack([_square(0, 0), _square(21, 20), _square(30, 0)])
    tally.add(gt_words, gt, pred, ["red circle", "red circle", "blue star"])
    tally.add(gt_words[:1], gt[:1], np.zeros((0, 40, 40), bool), [])  # a miss, no masks
    out = tally.summary()
    red, blue = out["words"]["red circle"], out["words"]["blue star"]
    assert (red["instances"], red["found"], red["labelled"]) == (2, 1, 1)
    assert red["recall"] == 0.5 and red["label_accuracy"] == 1.0
    assert red["masks"] == 2 and red["precision"] == 0.5  # one of its two masks is a red circle
    assert (blue["found"], blue["labelled"], blue["label_accuracy"]) == (1, 0, 0.0)
    assert blue["precision"] == 0.0
    assert out["all"]["instances"] == 3 and out["all"]["labelled_recall"] == round(1 / 3, 4)


def test_word_tally_with_nothing_found(tyd: ModuleType) -> None:
    tally = tyd.WordTally(["red circle"])
    tally.add([], np.zeros((0, 8, 8), bool), np.zeros((0, 8, 8), bool), [])
    out = tally.summary()
    assert out["words"]["red circle"]["recall"] is None
    assert out["all"]["precision"] is None


@pytest.mark.export
def test_smoke_training_export_and_eval(tyd: ModuleType, tmp_path: Path) -> None:
    """``--smoke``: one tiny epoch, the bundle (demo CLIP text tower), the eval JSON."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT, env=dict(os.environ, YOLO_OFFLINE="1"), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert manifest["yoloe"]["embed_dim"] == 64
    assert manifest["yoloe"]["text"]["model"] == "fastsam-demo-clip"
    assert manifest["yoloe"]["vocabulary"]["names"] == list(tyd.DEFAULT_VOCAB)
    results = json.loads((tmp_path / "eval.json").read_text())
    assert set(results["vocabularies"]) == {"all", "trained", "held_out", "colours", "shapes"}


@pytest.mark.export
def test_reestimated_batchnorm_keeps_the_function_and_gets_real_statistics(
    tyd: ModuleType, tmp_path: Path
) -> None:
    """The FastSAM start's folded norms get measured statistics; eval output is unchanged."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import YOLOESegModel

    with tyd.default_prompts():
        model = YOLOESegModel(str(tyd.model_yaml(tmp_path, tyd.WIDTH)), verbose=False)
    folded = tyd.init_from_fastsam(model, tyd.demo_text_bundle() / "fastsam.fp32.onnx")["folded"]
    assert len(folded) > 40  # every backbone/neck conv and the box/mask branches
    scenes = [s.image for s in iter_scenes(0, 16, width=160, height=160)]
    x = torch.from_numpy(np.stack([im[..., ::-1] for im in scenes[:4]]).transpose(0, 3, 1, 2)
                         .copy()).float() / 255.0  # fmt: skip
    seen: dict[str, torch.Tensor] = {}
    model.model[21].register_forward_hook(lambda _m, _i, o: seen.__setitem__("out", o))
    model.eval()
    with tyd.default_prompts(), torch.no_grad():
        model(x)
        before = seen["out"].clone()
        assert tyd.reestimate_batchnorm(model, folded, scenes) == len(folded)
        model.eval()
        model(x)
    after = seen["out"]
    assert float((after - before).abs().max()) <= 1e-4 * float(before.abs().max())
    bn = dict(model.named_modules())[folded[0]].bn
    assert float(bn.running_var.max()) > 1e-3 and float(bn.running_mean.abs().max()) > 0.0
    assert torch.allclose(bn.weight, torch.sqrt(bn.running_var + bn.eps))


def test_training_recipes_never_train_the_text_adapter(tyd: ModuleType) -> None:
    assert set(tyd.FROZEN) == {"embed", "neck", "all"}
    for frozen in tyd.FROZEN.values():
        assert "22.reprta" in frozen
    assert set(tyd.FROZEN["all"]) < set(tyd.FROZEN["neck"]) < set(tyd.FROZEN["embed"])
