"""Documentation and scripts stay inside the repository (issue 11).

* every relative link (and in-page anchor) of ``README.md`` and ``docs/*.md`` resolves;
* no link, docstring or comment points outside the repository or at notes that are not in it;
* ``scripts/arm64_check.sh`` names no package-registry host: its Debian mirror comes from
  ``DEBIAN_MIRROR`` or the host's apt sources, and its demo scene keeps ``generate_scene``'s BGR.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:href|src)=["']([^"']+)["']""")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _tracked_files() -> list[Path]:
    """The repository's files: git's list, or a walk when this is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout.decode()
        return [REPO / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {"work", "build", "dist", "node_modules", "__pycache__"}
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part in skip for part in p.relative_to(REPO).parts)
        ]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def _links(md: Path) -> list[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return LINK.findall(text) + HTML_LINK.findall(text)


@pytest.mark.parametrize("md", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_resolve_inside_the_repo(md):
    assert DOCS, "no documentation found"
    bad = []
    for target in _links(md):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if path_part.startswith("/"):
            bad.append(f"{target}: absolute path")
        elif not dest.is_relative_to(REPO):
            bad.append(f"{target}: points outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: {dest.relative_to(REPO)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, f"{md.relative_to(REPO)}: " + "; ".join(bad)


def test_the_link_checker_catches_broken_links(tmp_path):
    """The checker can fail: a missing file, an escape from the repo, a missing anchor."""
    md = REPO / "docs" / "service.md"
    text = "[a](nope.md) [b](../../outside.md) [c](#no-such-heading) [d](https://x.y/z)\n# Real\n"
    fake = tmp_path / "fake.md"
    fake.write_text(text)
    links = _links(fake)
    assert links == ["nope.md", "../../outside.md", "#no-such-heading", "https://x.y/z"]
    assert "real" in _anchors(fake) and "no-such-heading" not in _anchors(fake)
    assert _slug("Recorded run (2026-11-25)") == "recorded-run-2026-11-25"
    assert md.exists()


# names of design notes that live outside this repository: nothing here may refer to them
OUTSIDE_NOTES = re.compile(
    r"\.\./shared|/work/shared|fastsam-reference\.md|clip-edge\.md|pi-platform\.md|"
    r"docs/semantics\.md|docs/style\.md"
)


def test_nothing_points_at_notes_outside_the_repo():
    hits = []
    for path in _tracked_files():
        if path.suffix not in {".py", ".md", ".sh", ".toml", ".txt", ".service", ".cfg", ""}:
            continue
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_NOTES.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_docstring_doc_references_exist():
    """``docs/<name>.md`` mentioned in code exists."""
    missing = []
    for path in _tracked_files():
        if path.suffix != ".py" or not path.is_file():
            continue
        for ref in set(re.findall(r"docs/[\w./-]+\.md", path.read_text(encoding="utf-8"))):
            if not (REPO / ref).is_file():
                missing.append(f"{path.relative_to(REPO)}: {ref}")
    assert not missing, missing


# --------------------------------------------------------------------------------------------
# scripts/arm64_check.sh: mirror from the host, scene in BGR
# --------------------------------------------------------------------------------------------

SCRIPT = REPO / "scripts" / "arm64_check.sh"
REGISTRY_HOSTS = re.compile(r"deb\.debian\.org|ftp\.\w+\.debian\.org|archive\.ubuntu\.com")


def test_no_registry_host_in_scripts():
    for path in (REPO / "scripts").iterdir():
        if path.is_file() and path.suffix in {".sh", ".py"}:
            assert not REGISTRY_HOSTS.search(path.read_text(encoding="utf-8")), path.name


def _mirror(apt_etc, mirror=None):
    env = {k: v for k, v in os.environ.items() if k != "DEBIAN_MIRROR"}
    env["APT_ETC"] = str(apt_etc)
    if mirror is not None:
        env["DEBIAN_MIRROR"] = mirror
    return subprocess.run(
        ["bash", str(SCRIPT), "--print-mirror"], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


DEB822 = """Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb
# a comment
URIs: http://mirror-a.example/debian/
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror-a.example/debian-security
Suites: bookworm-security
"""

ONE_LINE = """# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror-b.example/debian bookworm main
deb http://mirror-b.example/debian-security bookworm-security main
"""


@pytest.mark.parametrize(
    ("files", "mirror", "expected"),
    [
        ({"sources.list.d/debian.sources": DEB822}, None, "http://mirror-a.example/debian"),
        ({"sources.list": ONE_LINE}, None, "https://mirror-b.example/debian"),
        ({"sources.list.d/x.list": ONE_LINE}, None, "https://mirror-b.example/debian"),
        ({"sources.list": ONE_LINE}, "http://mine.example/debian", "http://mine.example/debian"),
        ({}, "http://mine.example/debian", "http://mine.example/debian"),
    ],
    ids=["deb822", "one-line", "list-d", "env-wins", "env-only"],
)
def test_arm64_mirror_from_host_apt_sources(tmp_path, files, mirror, expected):
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = _mirror(tmp_path, mirror)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_arm64_without_mirror_asks_for_debian_mirror(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://archive.example/ubuntu jammy main\n")
    proc = _mirror(tmp_path)
    assert proc.returncode != 0 and "set DEBIAN_MIRROR" in proc.stderr


def test_arm64_scene_is_generate_scenes_bgr(tmp_path):
    from edge.demo.scenes import generate_scene

    out = tmp_path / "scene.png"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--python", sys.executable, "--write-scene", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seed = int(re.search(r"^IMAGE_SEED=(\d+)$", SCRIPT.read_text(), re.M).group(1))
    expected = generate_scene(seed, width=480, height=360).image
    np.testing.assert_array_equal(cv2.imread(str(out)), expected)


def test_readme_starts_with_the_two_setup_commands():
    """The README opens with exactly two commands: the demo job and the test command that
    .ci/run calls."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert block and text.index(block.group(0)) < text.index("\n## ")
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2, lines
    assert "fastsam-edge serve --demo" in lines[0] and "pip install -e ." in lines[0]
    assert lines[1] == "scripts/test.sh"
    assert "scripts/test.sh" in (root / ".ci" / "run").read_text()


CONFLICT_MARKER = re.compile(r"^(?:<{7} .*|={7}|>{7} .*)$", re.M)
"""The lines git writes around a merge conflict (``<<<<<<< HEAD``, ``=======``, ``>>>>>>> b``)."""


def _conflict_lines(text: str) -> list[int]:
    """1-based numbers of the lines of ``text`` that are merge-conflict markers."""
    return [text.count("\n", 0, m.start()) + 1 for m in CONFLICT_MARKER.finditer(text)]


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            "a\n" + "<" * 7 + " HEAD\nours\n" + "=" * 7 + "\ntheirs\n" + ">" * 7 + " main\n",
            [2, 4, 6],
        ),
        ("Title\n" + "=" * 8 + "\n`" + "<" * 7 + " x`\n " + "=" * 7 + "\n", []),
    ],
)
def test_the_conflict_marker_check_finds_markers(text, lines):
    assert _conflict_lines(text) == lines


def test_no_merge_conflict_markers_in_tracked_text_files():
    found = []
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary (images, ONNX) or a submodule
        found += [f"{path.relative_to(REPO)}:{n}" for n in _conflict_lines(text)]
    assert found == [], f"merge-conflict markers committed: {found}"


def test_scripts_index_names_every_script():
    """scripts/ holds only indexed tools: a new one-off must be named (or folded into bench)."""
    index = (REPO / "scripts" / "README.md").read_text(encoding="utf-8")
    names = sorted(
        p.name
        for p in (REPO / "scripts").iterdir()
        if p.is_file() and p.name != "README.md" and not p.name.endswith(".pyc")
    )
    assert names, "scripts/ is really read"
    missing = [n for n in names if f"`{n}`" not in index]
    assert not missing, f"name these in scripts/README.md (or remove them): {missing}"


@pytest.mark.parametrize("package", ["edge", "edge/service", "edge/bench"])
def test_package_docstrings_list_what_exists(package: str):
    """A package's docstring names each of its modules (and only modules that exist)."""
    import ast

    folder = REPO / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
    assert doc
    dotted = package.replace("/", ".")
    modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    named = set(re.findall(r"``(\w+)``", doc)) | set(
        re.findall(rf"{re.escape(dotted)}\.(\w+)", doc)
    )
    missing = sorted(m for m in modules if m not in named)
    assert not missing, f"{package}/__init__.py does not name: {missing}"
    listed = re.findall(rf":mod:`~?{re.escape(dotted)}\.(\w+)`", doc)
    for line in doc.splitlines():  # bullets of the form "* ``a`` / ``b``: what they do"
        if line.startswith("* ``"):
            listed += re.findall(r"``(\w+)``", line.split(":")[0])
    stale = sorted(m for m in listed if m not in modules)
    assert not stale, f"{package}/__init__.py names modules that do not exist: {stale}"


_EDGE_IMPORT = re.compile(r"^\s*from (edge(?:\.\w+)*) import ([\w, ()]+)$", re.MULTILINE)


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_import_edge_names_that_exist(script):
    """Python inside the shell scripts (heredocs) is not linted; a moved module broke
    arm64_check.sh's comparison once (edge.demo.metrics -> edge.metrics)."""
    import importlib

    for module, names in _EDGE_IMPORT.findall(script.read_text(encoding="utf-8")):
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.strip("()").split(",") if n.strip()):
            assert hasattr(mod, name), f"{script.name}: from {module} import {name}"
