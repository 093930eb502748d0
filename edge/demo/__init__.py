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
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from edge.errors import BundleError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_BUNDLE_DIR = ASSETS_DIR / "demo-bundle"
DEMO_YOLOE_DIR = ASSETS_DIR / "demo-yoloe"
DEMO_BUNDLES: Mapping[str, Path] = MappingProxyType(
    {"demo": DEMO_BUNDLE_DIR, "demo-yoloe": DEMO_YOLOE_DIR}
)
"""The embedded bundles by name: where a bundle directory is asked for (``--bundle``,
``model.bundle``, ``Segmenter.load``), these names mean the packaged bundle (``./demo`` names a
folder).

* ``demo``: the FastSAM demo (class-agnostic masks, the tiny CLIP for text prompts).
* ``demo-yoloe``: the open-vocabulary demo, a small YOLOE trained on the demo world
  (``scripts/train_yoloe_demo.py``) with the demo CLIP's text tower: masks named by the
  vocabulary (default: the nine colours), new colour and shape words encoded offline."""


def demo_bundle(name: str = "demo") -> Path:
    """Path of an embedded demo bundle.

    Args:
        name: A key of :data:`DEMO_BUNDLES` (default: the FastSAM demo).

    Raises:
        BundleError: An unknown name, or the package was installed without its assets.
    """
    path = DEMO_BUNDLES.get(name)
    if path is None:
        raise BundleError(f"demo bundle: {name!r} is not one of {list(DEMO_BUNDLES)}")
    if not (path / "bundle.json").is_file():
        raise BundleError(
            f"demo bundle: {str(path)!r} is missing; reinstall fastsam-edge with its package data"
        )
    return path


def is_demo_name(bundle: object) -> bool:
    """Whether a bundle setting names an embedded bundle (``"demo"``)."""
    return isinstance(bundle, str) and bundle in DEMO_BUNDLES


def resolve_bundle(bundle: str | Path | None) -> Path:
    """A bundle setting as a directory: ``None`` the FastSAM demo, a name of
    :data:`DEMO_BUNDLES` its embedded bundle, anything else the path itself.

    Raises:
        BundleError: An embedded bundle missing from the installed package.
    """
    if bundle is None:
        return demo_bundle()
    if is_demo_name(bundle):
        return demo_bundle(str(bundle))
    return Path(bundle)


DEMO_BUNDLE_NOTICE = (
    "the model is the embedded demo bundle, a tiny model trained only on the synthetic demo "
    "scenes (fastsam-edge scenes DIR writes some): on other images its masks mean nothing. "
    "For real images export FastSAM-s with fastsam-export (README: Real use) and pass its "
    "folder with {flag}."
)
"""Said once per run when the demo bundle meets frames that are not demo scenes; ``{flag}``:
where a real bundle is given (``--bundle DIR``, ``model.bundle``)."""

_SCENE_NAME = re.compile(r"scene_\d{6,}(\.png)?")  # {seed:06d}: seeds >= 1e6 have 7+ digits


def looks_like_demo_scene(name: str) -> bool:
    """Whether a file or frame name is a demo scene's (``scene_000042.png``, ``scene_1800000``,
    as written by :func:`edge.demo.scenes.save_scenes` and named by the service's demo source).

    A cheap test by name, for the one demo-bundle notice: a renamed scene gets the notice, a
    photo named like a scene does not.
    """
    return _SCENE_NAME.fullmatch(name) is not None
