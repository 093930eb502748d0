"""fastsam-edge runtime: FastSAM segmentation with numpy + onnxruntime + OpenCV only.

Example::

    import cv2
    from edge import Segmenter

    seg = Segmenter.load("bundle/")
    result = seg.segment(cv2.imread("photo.jpg"))
    print(len(result), result.xyxy, result.confidence, result.timings)
"""

from edge.errors import BundleError, FastSAMEdgeError, InputError
from edge.segmenter import Segmenter
from edge.types import MaskCrop, Masks

__all__ = [
    "BundleError",
    "FastSAMEdgeError",
    "InputError",
    "MaskCrop",
    "Masks",
    "Segmenter",
]
__version__ = "0.1.0"
