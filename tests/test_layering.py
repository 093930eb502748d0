"""The wall between the halves: ``edge`` never imports, nor names, the workstation side."""

from __future__ import annotations

import ast
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


# --------------------------------------------------------------------------------------------
# The import graph of edge/: no cycle, no arrow from a lower layer to a higher one
# --------------------------------------------------------------------------------------------

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary", ("edge.errors", "edge.types", "edge.paths", "edge.onnx_bytes", "edge.lru")),
    (
        "files and formats",
        ("edge.encode", "edge.io", "edge.bundle", "edge.session", "edge.tokenizer", "edge.cpu"),
    ),
    (
        "stages",
        (
            "edge.preprocess",
            "edge.postprocess",
            "edge.prompts",
            "edge.clip",
            "edge.prefilter",
            "edge.yoloe",
        ),
    ),
    ("selection", ("edge.textmatch", "edge.selection")),
    ("segmenter", ("edge.segmenter",)),
    ("public API", ("edge",)),
    (
        "outputs, demo and tools",
        (
            "edge.coco",
            "edge.overlay",
            "edge.marks",
            "edge.result_schema",
            "edge.demo.*",
            "edge.textcal",
            "edge.sources",
            "edge.cliargs",
            "edge.metrics",
            "edge.opcount",
            "edge.track",
        ),
    ),
    ("applications", ("edge.service.*", "edge.bench.*")),
    ("command line", ("edge.cli",)),
]
"""Layers of ``edge``, lowest first; a module may import its own layer and the ones below.
``edge.x.*`` is the package ``edge.x`` and everything under it."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(EDGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``edge`` module ``path`` imports: module level, in functions, under
    ``TYPE_CHECKING``, relative or absolute (``from edge.x import y`` counts ``edge.x.y`` when
    that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph(package: Path = EDGE) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, for every module of ``package``
    (``edge/`` or ``export/``)."""
    sources = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    paths = {_module_name(p): p for p in sources}
    known = set(paths)
    return {name: _imports(name, path, known) for name, path in paths.items()}


def edge_import_graph() -> dict[str, set[str]]:
    """Module -> the ``edge`` modules it imports, for every module of ``edge/``."""
    return import_graph(EDGE)


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """Index of the layer listing ``module`` (``None``: in no layer)."""
    for k, (_, members) in enumerate(layers):
        for member in members:
            prefix = member.removesuffix(".*")
            if module == member or (
                member.endswith(".*") and (module == prefix or module.startswith(prefix + "."))
            ):
                return k
    return None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as ``[a, b, ..., a]`` (one per back edge of a depth-first walk)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def upward_arrows(
    graph: dict[str, set[str]], layers: list[tuple[str, tuple[str, ...]]] = LAYERS
) -> list[str]:
    """Imports from a lower layer to a higher one, as ``"a (layer) -> b (layer)"``."""
    out = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            la, lb = layer_of(a, layers), layer_of(b, layers)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} ({layers[la][0]}) -> {b} ({layers[lb][0]})")
    return out


def test_every_edge_module_has_a_layer():
    missing = sorted(m for m in edge_import_graph() if layer_of(m) is None)
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


def test_edge_has_no_import_cycle():
    graph = edge_import_graph()
    assert "edge.selection" in graph["edge.segmenter"]  # the graph is really read
    assert not find_cycles(graph)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert not upward_arrows(edge_import_graph())


# --------------------------------------------------------------------------------------------
# The import graph of export/: the same rules (its imports of edge are checked by the wall above)
# --------------------------------------------------------------------------------------------

EXPORT = EDGE.parent / "export"
EXPORT_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("shared", ("export.common", "export.archs", "export.downstream")),
    ("int8 plan search (the quantize step passes its graph functions in)", ("export.int8plan",)),
    (
        "steps",
        (
            "export.quantize",
            "export.clip",
            "export.memory",
            "export.calibrate_text",
            "export.bench_reference",
        ),
    ),
    ("bundle", ("export.fastsam", "export.yoloe")),
    ("package", ("export",)),
    ("command line", ("export.cli",)),
]
"""Layers of ``export``, lowest first: a step never imports the bundle assembly that runs it."""


def test_every_export_module_has_a_layer():
    missing = sorted(m for m in import_graph(EXPORT) if layer_of(m, EXPORT_LAYERS) is None)
    assert not missing, f"add these modules to EXPORT_LAYERS in {__file__}: {missing}"


def test_export_has_no_import_cycle():
    graph = import_graph(EXPORT)
    assert "export.clip" in graph["export.fastsam"]  # the graph is really read
    assert not find_cycles(graph)


def test_export_imports_only_downwards():
    assert not upward_arrows(import_graph(EXPORT), EXPORT_LAYERS)


_TINY = [("low", ("t.low",)), ("mid", ("t.mid", "t.pkg.*")), ("high", ("t.high",))]


@pytest.mark.parametrize(
    ("graph", "cycles", "arrows"),
    [
        ({"t.low": set(), "t.mid": {"t.low"}, "t.high": {"t.mid", "t.low"}}, 0, 0),
        ({"t.low": {"t.mid"}, "t.mid": set(), "t.high": set()}, 0, 1),
        ({"t.low": set(), "t.mid": {"t.pkg.a"}, "t.pkg.a": {"t.mid"}}, 1, 0),
        ({"t.low": {"t.high"}, "t.mid": set(), "t.high": {"t.low"}}, 1, 1),
        ({"t.low": {"t.low"}}, 1, 0),
    ],
)
def test_graph_checks_on_a_tiny_graph(graph, cycles, arrows):
    assert len(find_cycles(graph)) == cycles
    assert len(upward_arrows(graph, _TINY)) == arrows


def test_the_importer_counts_every_kind_of_import(tmp_path):
    src = tmp_path / "edge" / "pkg" / "mod.py"
    src.parent.mkdir(parents=True)
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import edge.a\n"
        "from . import b\n"
        "from ..c import thing\n"
        "if TYPE_CHECKING:\n"
        "    from edge.d import T\n"
        "def f():\n"
        "    from edge import e\n"
    )
    known = {"edge.a", "edge.pkg.b", "edge.c", "edge.d", "edge.e", "edge.pkg.mod", "edge.x"}
    assert _imports("edge.pkg.mod", src, known) == known - {"edge.pkg.mod", "edge.x"}
