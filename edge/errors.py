"""Error types raised at the runtime's API edge.

Every error names the offending field and value so that a service log line is enough to fix the
input. All derive from ``ValueError`` so callers that only know the standard library can still
catch them.
"""

from __future__ import annotations


class FastSAMEdgeError(ValueError):
    """Base class of every error raised by fastsam-edge."""


class InputError(FastSAMEdgeError):
    """A caller-supplied value (image, threshold, prompt) is invalid."""


class BundleError(FastSAMEdgeError):
    """A model bundle is missing, incomplete, corrupt or incompatible."""
