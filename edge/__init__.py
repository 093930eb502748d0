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

Where each stage lives, lowest layer first (a module imports only its own layer and those
below; ``tests/test_layering.py`` checks it). ``Segmenter.segment`` walks ``segmenter ->
preprocess -> prompts -> clip (text prompts) -> the detector -> postprocess -> selection`` and
enters each once:

* vocabulary: :mod:`edge.errors`, :mod:`edge.types` (``Masks``, ``MaskCrop``),
  :mod:`edge.paths`, :mod:`edge.onnx_bytes`, :mod:`edge.lru` (the bounded caches);
* files and formats: :mod:`edge.bundle` (``bundle.json``: ``BundleManifest`` and its typed
  sections), :mod:`edge.session` (the one onnxruntime session factory), :mod:`edge.io`,
  :mod:`edge.encode` (RLE, polygons), :mod:`edge.tokenizer`, :mod:`edge.cpu`;
* stages: :mod:`edge.preprocess` (letterbox), :mod:`edge.postprocess` (decode, NMS, mask
  assembly, ``Detections``), :mod:`edge.prompts` (prompt types, JSON, validation),
  :mod:`edge.clip` (the CLIP encoders), :mod:`edge.prefilter` (the dense text prefilter's
  mask pooling), :mod:`edge.yoloe` (YOLOE's open vocabulary: text adapter, word scoring,
  NMS / top-k decode, the word cache);
* :mod:`edge.textmatch` (what a text prompt selects, through CLIP) and :mod:`edge.selection`
  (what point, box and text prompts select on one frame's detections);
* :mod:`edge.segmenter`: ``Segmenter``, the bundle loaded and the stages run in order;
* this package: the public API below;
* outputs, demo and tools: :mod:`edge.result_schema` (the result JSON), :mod:`edge.coco`,
  :mod:`edge.overlay`, :mod:`edge.marks`, :mod:`edge.sources` (CLI inputs),
  :mod:`edge.textcal`, :mod:`edge.cliargs`, :mod:`edge.metrics` (mask IoU, recall, two-way
  agreement, track id consistency), :mod:`edge.opcount` (a detector's operation count from
  onnxruntime's profile), :mod:`edge.track` (track ids across frames, enter / leave events),
  and :mod:`edge.demo` (the demo world: scenes and the embedded demo bundle);
* applications: :mod:`edge.service` (the camera service), :mod:`edge.bench` (benchmarks);
* :mod:`edge.cli`: the ``fastsam-edge`` command.
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
