"""The embedded demo bundles (``edge.demo``): names and resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

import edge.demo
from edge.demo import (
    DEMO_BUNDLE_DIR,
    DEMO_BUNDLES,
    demo_bundle,
    is_demo_name,
    looks_like_demo_scene,
    resolve_bundle,
)
from edge.errors import BundleError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEMO_BUNDLE_DIR),
        ("demo", DEMO_BUNDLE_DIR),
        ("./demo", Path("demo")),  # a folder of that name, spelled as a path
        ("/srv/bundles/fastsam-s", Path("/srv/bundles/fastsam-s")),
        (Path("demo"), Path("demo")),  # only the string names an embedded bundle
    ],
)
def test_resolve_bundle(value: str | Path | None, expected: Path) -> None:
    assert resolve_bundle(value) == expected
    assert is_demo_name(value) == (isinstance(value, str) and value in DEMO_BUNDLES)


def test_demo_bundle_refuses_unknown_names_and_missing_assets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match="'fastsam' is not one of"):
        demo_bundle("fastsam")
    monkeypatch.setattr(edge.demo, "DEMO_BUNDLES", {"demo": tmp_path})
    with pytest.raises(BundleError, match="is missing; reinstall"):
        demo_bundle()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scene_000042.png", True),
        ("scene_1800000.png", True),  # `fastsam-edge scenes` writes held-out seeds >= 1e6
        ("scene_000042", True),  # the service's demo frame ids
        ("scene_42.png", False),
        ("holiday.png", False),
        ("scene_000042.jpg", False),
    ],
)
def test_looks_like_demo_scene(name: str, expected: bool) -> None:
    assert looks_like_demo_scene(name) is expected
