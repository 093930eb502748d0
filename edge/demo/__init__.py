"""The demo world: seeded synthetic scenes and the embedded demo bundle.

No weights can be downloaded in CI or on a fresh Pi, so the project carries its own world:
:mod:`edge.demo.scenes` draws seeded scenes with exact ground truth (:mod:`edge.metrics`
scores masks against it), and the demo bundle (``edge/demo/assets/demo-bundle``, a small
FastSAM-style model with a tiny CLIP, trained on the scenes) ships inside the package so that the
README's first command, the tests and the benchmarks run offline with a model that really
segments this world. It is *not* a general-purpose segmenter: for real images export FastSAM-s.
"""

from __future__ import annotations

import re
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


DEMO_BUNDLE_NOTICE = (
    "the model is the embedded demo bundle, a tiny model trained only on the synthetic demo "
    "scenes (fastsam-edge scenes DIR writes some): on other images its masks mean nothing. "
    "For real images export FastSAM-s with fastsam-export (README: Real use) and pass its "
    "folder with {flag}."
)
"""Said once per run when the demo bundle meets frames that are not demo scenes; ``{flag}``:
where a real bundle is given (``--bundle DIR``, ``model.bundle``)."""

_SCENE_NAME = re.compile(r"scene_\d{6}(\.png)?")


def looks_like_demo_scene(name: str) -> bool:
    """Whether a file or frame name is a demo scene's (``scene_000042.png``, as written by
    :func:`edge.demo.scenes.save_scenes` and named by the service's demo source).

    A cheap test by name, for the one demo-bundle notice: a renamed scene gets the notice, a
    photo named like a scene does not.
    """
    return _SCENE_NAME.fullmatch(name) is not None
