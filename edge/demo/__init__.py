"""The demo world: seeded synthetic scenes and the embedded demo bundle.

No weights can be downloaded in CI or on a fresh Pi, so the project carries its own world:
:mod:`edge.demo.scenes` draws seeded scenes with exact ground truth (:mod:`edge.metrics`
scores masks against it), and the demo bundle (``edge/demo/assets/demo-bundle``, a small
FastSAM-style model with a tiny CLIP, trained on the scenes) ships inside the package so that the
README's first command, the tests and the benchmarks run offline with a model that really
segments this world. It is *not* a general-purpose segmenter: for real images export FastSAM-s.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import BundleError

DEMO_BUNDLE_DIR = Path(__file__).resolve().parent / "assets" / "demo-bundle"


def demo_bundle() -> Path:
    """Path of the embedded demo bundle.

    Raises:
        BundleError: The package was installed without its assets.
    """
    if not (DEMO_BUNDLE_DIR / "bundle.json").is_file():
        raise BundleError(
            f"demo bundle: {str(DEMO_BUNDLE_DIR)!r} is missing; reinstall fastsam-edge with its "
            "package data"
        )
    return DEMO_BUNDLE_DIR
