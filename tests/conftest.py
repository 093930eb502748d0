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
