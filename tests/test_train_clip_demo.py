"""``scripts/train_clip_demo.py --tower mci0``: the MobileCLIP-family proxy trains, exports
with a dense map and a pruned vocabulary, and loads in the runtime (tiny run: no accuracy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import read_manifest
from edge.clip import ClipEncoder
from edge.demo import demo_bundle

pytestmark = pytest.mark.export
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_clip_demo.py"


def _run(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def test_mci0_proxy_trains_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    report = _run(
        "--tower", "mci0", "--scenes", "12", "--steps", "2", "--batch", "8", "--threads", "2",
        "--out", str(out),
    )  # fmt: skip
    assert report["training"]["steps"] == 2 and report["training"]["crops"] > 20
    ckpt = out / "fastsam-demo-mobileclip.pt"
    assert ckpt.is_file() and (out / "train.json").is_file()
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle(), bundle)
    files = _run(
        "--tower", "mci0", "--from-checkpoint", str(ckpt), "--add-to-bundle", str(bundle),
        "--out", str(out),
    )["files"]  # fmt: skip
    assert {"clip-dense.fp32.onnx", "clip-dense.int8.onnx"} <= set(files)
    clip = read_manifest(bundle).clip.to_json()
    assert clip["model"] == "fastsam-demo-mobileclip" and clip["dense"]["stride"] == 32
    assert clip["text"]["vocabulary"]["pruned"] is True
    assert clip["training"]["steps"] == 2  # the facts of the run that made the checkpoint
    enc = ClipEncoder.from_bundle(bundle, threads=1)
    assert enc.has_dense and enc.embed_dim == 64
    t = enc.encode_text(["a red circle", "a blue square"])
    img = enc.encode_images([np.full((30, 40, 3), 200, np.uint8)])
    assert t.shape == (2, 64) and img.shape == (1, 64)
    # the demo detector files are untouched
    for name, entry in read_manifest(demo_bundle()).files.items():
        if not name.startswith("clip-"):
            assert read_manifest(bundle).files[name].sha256 == entry.sha256
