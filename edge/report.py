"""Deprecated alias of :mod:`edge.result_schema` (renamed; this alias goes in the next release)."""

import sys
import warnings

from edge import result_schema

warnings.warn(
    "edge.report is now edge.result_schema; import it from there (this alias goes in the next "
    "release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = result_schema
