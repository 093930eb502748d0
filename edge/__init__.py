"""fastsam-edge runtime: FastSAM segmentation with numpy + onnxruntime + OpenCV only.

Example::

    import cv2
    from edge import BoxPrompt, PointPrompt, Segmenter

    seg = Segmenter.load("bundle/")
    image = cv2.imread("photo.jpg")
    result = seg.segment(image)
    print(len(result), result.xyxy, result.confidence, result.timings)

    # Prompts (docs/prompts.md): a click, a box; data["prompt_index"] says which selected what.
    click, box = PointPrompt([[320, 240]], [1]), BoxPrompt([10, 10, 200, 150])
    picked = seg.segment(image, prompt=[click, box])
"""

from edge.errors import BundleError, FastSAMEdgeError, InputError
from edge.prompts import BoxPrompt, PointPrompt, Prompt, TextPrompt, parse_prompts
from edge.segmenter import Segmenter
from edge.types import MaskCrop, Masks

__all__ = [
    "BoxPrompt",
    "BundleError",
    "FastSAMEdgeError",
    "InputError",
    "MaskCrop",
    "Masks",
    "PointPrompt",
    "Prompt",
    "Segmenter",
    "TextPrompt",
    "parse_prompts",
]
__version__ = "0.1.0"
