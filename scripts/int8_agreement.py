"""int8 vs fp32 agreement of a bundle's detector on held-out scenes, with this CPU's kernels.

Usage: python scripts/int8_agreement.py BUNDLE [--scenes 16] [--objects 3,8] [--threads 2]
       [--kernels host|reference|both] [--seed-offset 30000] [--conf C] [--out FILE.json]
       [--world demo|texture] [--vocab "red,circle,..."]

Runtime-only (numpy, onnxruntime, OpenCV): it runs on a Pi and inside the arm64 check's
emulated root (scripts/arm64_check.sh --agreement), where "host" means the ARM CPU model's
integer kernels. Held-out scenes (seeds >= 1_000_000 + offset, ground truth known) are drawn at
the bundle's input size. Prints one line and writes JSON with the CPU's int8 class. A YOLOE bundle
is decoded as its frames are (``edge.yoloe.vocabulary_detections``) with its default vocabulary,
or ``--vocab`` words encoded by its text tower.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functools import partial  # noqa: E402

import numpy as np  # noqa: E402

from edge.bundle import BundleManifest, read_manifest  # noqa: E402
from edge.cpu import cpu_info, int8_class  # noqa: E402
from edge.demo.scenes import EVAL_SEED_START, WORLDS, generate_scene, restyle  # noqa: E402
from export.quantize import CalibrationSet, agreement_of, compare_precisions  # noqa: E402


def yoloe_decode(bundle: Path, m: BundleManifest, words: list[str], conf: float) -> Any:
    """How the agreement decodes a YOLOE bundle's outputs: ``words`` (empty: the default
    vocabulary) scored as a frame scores them, at ``conf``."""
    from edge.segmenter import Segmenter
    from edge.yoloe import Vocabulary, YoloeHead, vocabulary_detections

    section = m.yoloe
    assert section is not None
    if words:
        raw = Segmenter.load(bundle, precision=m.precisions[0]).encode_words(words)
    elif section.vocabulary and section.vocabulary_file:
        words, raw = list(section.vocabulary), np.load(bundle / section.vocabulary_file)
    else:
        raise SystemExit(f"{bundle}: a YOLOE bundle without a default vocabulary: give --vocab")
    vocab = Vocabulary.build(YoloeHead.load(bundle / section.head), words, raw)
    th = (conf, m.thresholds.iou, m.thresholds.max_det)
    return partial(vocabulary_detections, section=section, vocab=vocab, thresholds=th)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--objects", default="3,8", help="MIN,MAX objects per scene")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kernels", choices=("host", "reference", "both"), default="both")
    p.add_argument("--seed-offset", type=int, default=30_000)
    p.add_argument("--conf", type=float, help="score threshold (default: the bundle's)")
    p.add_argument("--out", type=Path)
    p.add_argument("--world", choices=WORLDS, default="demo", help="scene style (restyle)")
    p.add_argument("--vocab", default="", help="YOLOE bundles: comma-separated words")
    a = p.parse_args(argv)
    m = read_manifest(a.bundle)
    if "int8" not in m.precisions:
        raise SystemExit(f"{a.bundle}: no int8 detector")
    h, w = m.input.imgsz
    lo, hi = (int(v) for v in a.objects.split(","))
    scenes = [
        generate_scene(EVAL_SEED_START + a.seed_offset + i, w, h, lo, hi) for i in range(a.scenes)
    ]
    images = [restyle(s.image, s.seed, a.world) for s in scenes]
    held_out = CalibrationSet(images, "held-out", [s.masks for s in scenes])
    th = m.thresholds
    words = [w.strip() for w in a.vocab.split(",") if w.strip()]
    if words and m.yoloe is None:
        raise SystemExit(f"--vocab: {a.bundle} is a FastSAM bundle (no vocabulary)")
    decode = yoloe_decode(a.bundle, m, words, a.conf or th.conf) if m.yoloe else None
    kernels = ("host", "reference") if a.kernels == "both" else (a.kernels,)
    result = {
        "bundle": m.name,
        "cpu": cpu_info()["cpu"],
        "int8_class": int8_class().to_dict(),
        "scenes": a.scenes,
        "objects": [lo, hi],
        "conf": a.conf or th.conf,
        "vocabulary": words or (list(m.yoloe.vocabulary) if m.yoloe else None),
    }
    for k in kernels:
        rep = compare_precisions(
            a.bundle / m.detector_file("fp32"), a.bundle / m.detector_file("int8"), held_out,
            (h, w), m.input.dynamic, a.conf or th.conf, th.iou, th.max_det, a.threads, decode,
            kernels=k,
        )  # fmt: skip
        result[k] = rep
        print(
            f"{m.name} [{k}, {result['int8_class']['name']}]: mean mask IoU "
            f"{rep['mean_iou_fp32_to_int8']:.3f} (fp32->int8) / "
            f"{rep['mean_iou_int8_to_fp32']:.3f} (int8->fp32), min {agreement_of(rep):.3f}; "
            f"recall {rep['recall_fp32']:.3f} -> {rep['recall_int8']:.3f}",
            flush=True,
        )
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
