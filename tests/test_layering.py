"""The wall between the halves: ``edge`` never imports, nor names, the workstation side."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[1] / "edge"
# an import of the export package, or its module path in a string (``-m export.x``, a
# ``"export.x"`` module name)
_NAMES_EXPORT = re.compile(
    r"^\s*(from|import)\s+export\b|(?<![\w./-])export\.[a-z_]+\b(?!\()", re.MULTILINE
)


def _edge_sources() -> list[Path]:
    return sorted(p for p in EDGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _edge_sources(), ids=lambda p: str(p.relative_to(EDGE)))
def test_edge_never_names_the_export_package(path):
    hits = [m.group(0).strip() for m in _NAMES_EXPORT.finditer(path.read_text())]
    assert not hits, f"{path} names the export package: {hits}"


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("from export.quantize import x", True),
        ("import export", True),
        ('module = "export.bench_reference"', True),
        ("python -m export.bench_reference", True),
        ("the onnx export. Then", False),
        ("fastsam-export writes it", False),
        ("torch.onnx.export(model)", False),
    ],
)
def test_the_wall_pattern(text, hit):
    assert bool(_NAMES_EXPORT.search(text)) == hit


def test_importing_every_edge_module_pulls_in_no_workstation_package():
    code = (
        "import importlib, pkgutil, sys\n"
        "import edge\n"
        "for m in pkgutil.walk_packages(edge.__path__, 'edge.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in ('torch', 'onnx', 'ultralytics', 'open_clip', 'export')\n"
        "       if m in sys.modules]\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
