"""fastsam-export: FastSAM weights (and optionally CLIP) -> an ONNX model bundle for edge/.

Workstation side: needs the ``export`` extra (torch, ultralytics, onnx, onnxruntime). It may import
``edge`` (shared pre-processing and manifest schema); ``edge`` never imports this package.
"""

from export.common import ExportError
from export.fastsam import export_bundle, parse_imgsz

__all__ = ["ExportError", "export_bundle", "parse_imgsz"]
