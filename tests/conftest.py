"""Shared fixtures. Runtime tests need only numpy/onnxruntime/OpenCV; export tests are marked."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    """The embedded demo bundle (committed; runtime-only environments need nothing else)."""
    from edge.demo import demo_bundle as _demo

    return _demo()


def strip_clip(bundle_dir: Path) -> Path:
    """Remove the CLIP files and ``clip`` section of a bundle copy (detector only)."""
    import dataclasses
    import json

    from edge.bundle import MANIFEST_NAME, read_manifest

    m = read_manifest(bundle_dir)
    clip_names = {n for n in m.files if n.startswith("clip-")}
    for name in clip_names:
        (bundle_dir / name).unlink(missing_ok=True)
    files = {n: e for n, e in m.files.items() if n not in clip_names}
    doc = dataclasses.replace(m, files=files, clip=None).to_dict()
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return bundle_dir


@pytest.fixture(scope="session")
def detector_only_bundle(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Path:
    """A copy of the demo bundle without its CLIP text support."""
    import shutil

    dest = tmp_path_factory.mktemp("detector-only") / "bundle"
    shutil.copytree(demo_bundle, dest)
    return strip_clip(dest)


# opt-in markers: root, debootstrap, network and minutes each -> the variable that enables them
OPT_IN = {"arm64": "FASTSAM_ARM64_CHECK", "pi_walk": "FASTSAM_PI_WALK"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the opt-in tests unless their variable is 1.

    ``arm64`` (qemu emulation): ``FASTSAM_ARM64_CHECK=1 pytest -m arm64``; ``pi_walk`` (the
    README's Pi path in a Debian root): ``FASTSAM_PI_WALK=1 pytest -m pi_walk``.
    """
    off = [m for m, var in OPT_IN.items() if os.environ.get(var) != "1"]
    dropped = [item for item in items if any(item.get_closest_marker(m) for m in off)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
