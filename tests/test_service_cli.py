"""``edge/service/cli.py``: what ``serve`` warns about at start, and its exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cliargs import EXIT_INTERRUPTED
from edge.service.cli import start_warnings
from edge.service.config import demo_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("overrides", "names", "missing", "expected"),
    [
        pytest.param({}, [], [], [], id="demo-scenes"),
        pytest.param({}, [], ["ftfy"], ["text prompts are off"], id="no-tokenizer"),
        pytest.param({"source.kind": "picamera2"}, [], [], ["demo bundle"], id="camera"),
        pytest.param({"source.kind": "replay"}, ["a.jpg"], [], ["demo bundle"], id="photos"),
        pytest.param({"source.kind": "replay"}, ["scene_000001.png"], [], [], id="scene-replay"),
        pytest.param({"model.bundle": "demo-yoloe"}, [], [], [], id="yoloe-demo"),
        pytest.param(
            {"model.bundle": "demo-yoloe", "source.kind": "picamera2"},
            [],
            [],
            ["demo bundle"],
            id="yoloe-demo-camera",
        ),  # fmt: skip
    ],
)
def test_start_warnings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict,
    names: list[str],
    missing: list[str],
    expected: list[str],
) -> None:
    import edge.tokenizer

    monkeypatch.setattr(edge.tokenizer, "missing_text_deps", lambda: missing)
    for name in names:
        (tmp_path / name).write_bytes(b"")
    if overrides.get("source.kind") == "replay":
        overrides = {**overrides, "source.path": str(tmp_path)}
    lines = start_warnings(demo_config(tmp_path / "out", **overrides))
    assert len(lines) == len(expected), lines
    for line, needle in zip(lines, expected, strict=True):
        assert needle in line
    if missing:
        assert "pip install ftfy regex" in lines[0]
    if expected == ["demo bundle"]:
        assert "fastsam-export" in lines[0] and "model.bundle" in lines[0]


def test_serve_logs_the_missing_tokenizer_once_at_start(tmp_path: Path) -> None:
    code = (
        "import sys, edge.tokenizer as t; t.missing_text_deps = lambda: ['ftfy', 'regex']; "
        "from edge.cli import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--demo", "--max-frames", "1", "--out",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("WARNING") == 1, proc.stderr
    assert "text prompts are off" in proc.stderr


def test_serve_exits_130_on_ctrl_c(tmp_path: Path) -> None:
    """The README's exit-code table: 130 after Ctrl-C (SIGINT), once the frame is finished."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "serve", "--demo", "--out", str(tmp_path / "out"),
         "--set", "source.loop=true", "--log-level", "info"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until it serves (signal handlers installed)
        if "serving:" in line:
            break
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "[SIGINT]" in out


@pytest.mark.skipif(
    not (
        Path(__file__).resolve().parents[1] / "edge/demo/assets/demo-yoloe/bundle.json"
    ).is_file(),
    reason="edge/demo/assets/demo-yoloe is not shipped yet (scripts/train_yoloe_demo.py)",
)
def test_serve_demo_with_the_yoloe_demo_bundle_labels_masks(tmp_path: Path) -> None:
    """``serve --demo --bundle demo-yoloe``: results carry the vocabulary and word labels."""
    import json

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "serve", "--demo", "--bundle", "demo-yoloe",
         "--max-frames", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    assert len(docs) == 2
    assert all(d["bundle"]["name"] == "yoloe-demo-320" for d in docs)
    labels = [m["label"] for d in docs for m in d["masks"]]
    assert labels and all(label in docs[0]["vocabulary"] for label in labels)
