"""What every export step shares: the one error type and the exporting tools' versions."""

from __future__ import annotations

import importlib.metadata as md

from edge.errors import FastSAMEdgeError


class ExportError(FastSAMEdgeError):
    """The export cannot proceed; the message names the flag, file or value at fault.

    The one error of ``fastsam-export`` (bad flags, weights, CLIP options, failed checks): the
    command prints it and exits 2.
    """


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` if absent), for manifests."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
