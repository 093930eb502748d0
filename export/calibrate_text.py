"""``fastsam-export --calibrate-text DIR``: measure a bundle's text threshold on the user's images.

The measurement itself is runtime code (``edge.textcal``: best-mask CLIP similarity of matching
and non-matching words, threshold at the best balanced accuracy); this module runs it on a
bundle and stores the result in its ``bundle.json`` (``clip.text_threshold``, the default of
``fastsam-edge segment --text``), leaving every hashed file untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def calibrate_bundle(bundle_dir: str | Path, folder: str | Path) -> dict[str, Any]:
    """Measure the text threshold of ``bundle_dir`` on ``folder`` and store it.

    Args:
        bundle_dir: A bundle with CLIP.
        folder: Images plus ``words.json`` (``edge.textcal.load_samples``).

    Returns:
        The measurement (``threshold``, ``balanced_accuracy``, counts, ...).

    Raises:
        InputError: A bad folder or a bundle without CLIP.
        BundleError: A missing or corrupt bundle.
    """
    from edge.segmenter import Segmenter
    from edge.textcal import calibrate, load_samples, write_threshold

    samples = load_samples(folder)
    seg = Segmenter.load(bundle_dir)
    seg.text_encoder()  # fails early, with the re-export hint, on a bundle without CLIP
    measured = calibrate(seg, samples)
    write_threshold(bundle_dir, measured, f"fastsam-export --calibrate-text {Path(folder).name}")
    return measured
