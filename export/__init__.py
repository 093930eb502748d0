"""fastsam-export: FastSAM weights (and optionally CLIP) -> an ONNX model bundle for edge/.

Workstation side: needs the ``export`` extra (torch, ultralytics, onnx, onnxruntime). It may import
``edge`` (shared pre-processing and manifest schema); ``edge`` never imports this package.

The names below are imported on first use, so that ``fastsam-export`` in a runtime-only install
can start and say what to install instead of dying in an import.
"""

from __future__ import annotations

from typing import Any

from export.common import ExportError

__all__ = ["ExportError", "export_bundle", "parse_imgsz"]


def __getattr__(name: str) -> Any:
    if name in ("export_bundle", "parse_imgsz"):
        from export import fastsam

        return getattr(fastsam, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
