"""Deprecated alias of :mod:`edge.demo.scenes` (moved; this alias goes in the next release)."""

import sys
import warnings

from edge.demo import scenes

warnings.warn(
    "edge.scenes moved to edge.demo.scenes; import it from there (this alias goes in the next "
    "release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = scenes
