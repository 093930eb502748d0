"""``fastsam-export`` flags: one meaning per flag, old spellings, ``--calibrate-text``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edge.demo.scenes import EVAL_SEED_START, generate_scene

pytestmark = pytest.mark.export


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (
            ["w.pt", "--out", "{tmp}/b", "--precision", "int8-only"],
            2,
            [
                "--precision int8-only (CLIP encoders) is deprecated",
                "--clip-precision int8-only",
                "need --clip MODEL",
            ],
        ),  # fmt: skip
        (["w.pt", "--out", "{tmp}/b", "--clip-precision", "int8-only"], 2, ["need --clip MODEL"]),
        (["w.pt", "--out", "{tmp}/b", "--precision", "int8"], 2, ["--precision: expected"]),
        (["w.pt", "--out", "{tmp}/no/such/b"], 2, ["--out: directory", "does not exist"]),
        (["--out", "{tmp}/b"], 2, ["WEIGHTS: required"]),
        (["w.pt", "--out", "{tmp}/b", "--calibrate-text", "{tmp}"], 2, ["needs --clip MODEL"]),
        (
            [
                "w.pt",
                "--out",
                "{tmp}/b",
                "--clip",
                "ViT-B-32",
                "--clip-pretrained",
                "none",
                "--calibrate-text",
                "{tmp}",
            ],
            2,
            ["words.json"],
        ),  # fmt: skip
    ],
)
def test_flags(tmp_path: Path, args: list[str], code: int, needles: list[str]) -> None:
    proc = _export(*(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == code, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_version_and_global_options(where: str) -> None:
    proc = _export("--version")
    assert proc.returncode == 0 and re.fullmatch(r"fastsam-export \d+\.\d+\.\d+\s*", proc.stdout)
    args = ["--log-level", "debug", "--out", "x"] if where == "before" else ["--out", "x"]
    proc = _export(*args, "--precision", "fp64")
    assert proc.returncode == 2 and "--precision: expected" in proc.stderr


def test_calibrate_text_updates_an_existing_bundle(tmp_path: Path, demo_bundle: Path) -> None:
    pytest.importorskip("ftfy")
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    doc = json.loads((bundle / "bundle.json").read_text())
    del doc["clip"]["text_threshold"], doc["clip"]["text_threshold_calibration"]
    (bundle / "bundle.json").write_text(json.dumps(doc, indent=2))
    cal = tmp_path / "cal"
    cal.mkdir()
    images = {}
    for k in range(4):
        sc = generate_scene(EVAL_SEED_START + 870_000 + k, 320, 320)
        cv2.imwrite(str(cal / f"s{k}.png"), sc.image)
        images[f"s{k}.png"] = sorted(set(sc.prompts))
    (cal / "words.json").write_text(json.dumps({"images": images, "negatives": ["a dog"]}))
    proc = _export("--calibrate-text", str(cal), "--out", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert "text threshold:" in proc.stdout and "clip.text_threshold" in proc.stdout
    clip = json.loads((bundle / "bundle.json").read_text())["clip"]
    measured = clip["text_threshold_calibration"]
    assert clip["text_threshold"] == measured["threshold"]
    assert measured["images"] == 4 and measured["balanced_accuracy"] > 0.75
    assert measured["matching"]["mean"] > clip["text_threshold"] > measured["non_matching"]["mean"]
    from edge.segmenter import Segmenter

    assert Segmenter.load(bundle, threads=1).text.threshold == clip["text_threshold"]


@pytest.mark.parametrize("module", ["torch", "ultralytics"])
def test_runtime_only_install_says_to_install_the_export_extra(
    module: str, tmp_path: Path
) -> None:
    """No traceback: exit 2 and what to install (simulated in a fresh interpreter: the module
    cannot be imported; a subprocess, so this process's ``export`` modules stay as they are)."""
    weights = tmp_path / "FastSAM-s.pt"
    weights.write_bytes(b"not read: the import fails first")
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from export.cli import main\n"
        f"sys.exit(main([{str(weights)!r}, '--out', {str(tmp_path / 'b')!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'pip install -e ".[export]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--int8-target", "high"], "--int8-target: expected IOU or IOU,LOSS_PT"),
        (["--int8-target", "1.5"], "--int8-target: IOU must be in (0, 1]"),
        (["--int8-target", "0.97,1,2"], "--int8-target: expected"),
        (["--int8-min-speedup", "0"], "--int8-min-speedup: must be > 0"),
        (["--int8-min-iou", "2"], "--int8-min-iou: must be in (0, 1]"),
        (["--calib-count", "1"], "--calib-count: 1 is too few"),
        (["--verify-images", "{tmp}/none"], "--verify-images:"),
    ],
)
def test_int8_plan_flags_checked_before_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    from export.cli import main

    argv = ["w.pt", "--out", str(tmp_path / "b"), *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_int8_plan_flags_reach_the_options() -> None:
    from export.cli import build_parser, int8_plan_options

    args = build_parser().parse_args(
        ["w.pt", "--out", "b", "--int8-plan", "fixed", "--int8-target", "0.98,0.5",
         "--int8-min-speedup", "2"]
    )  # fmt: skip
    opts = int8_plan_options(args)
    assert opts.mode == "fixed" and opts.target.min_iou == 0.98
    assert opts.target.max_recall_loss == pytest.approx(0.005) and opts.target.min_speedup == 2.0
    default = int8_plan_options(build_parser().parse_args(["w.pt", "--out", "b"]))
    assert default.mode == "search" and default.target.min_iou == 0.97
    assert default.target.max_recall_loss == pytest.approx(0.01)
    assert default.target.min_speedup == 1.3
