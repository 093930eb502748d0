"""Deprecated alias of :mod:`edge.demo.metrics` (moved; this alias goes in the next release)."""

import sys
import warnings

from edge.demo import metrics

warnings.warn(
    "edge.metrics moved to edge.demo.metrics; import it from there (this alias goes in the next "
    "release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = metrics
