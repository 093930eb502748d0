"""Measure the demo CLIP's text threshold on held-out demo scenes; optionally store it.

    PYTHONPATH=. python scripts/calibrate_text_demo.py [--count 40] [--write]

Matching words are each scene's objects ("a red circle"), non-matching words are colour/shape
pairs absent from the scene plus words outside the demo world ("a dog"); see
``edge.textcal``. The threshold is chosen on one set of held-out scenes and checked on a second
set; ``--write`` stores both in ``edge/demo/assets/demo-bundle/bundle.json``
(``clip.text_threshold`` and ``clip.text_threshold_calibration``; no file hash changes).
Needs the text extra (ftfy, regex).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.demo import demo_bundle  # noqa: E402
from edge.demo.scenes import EVAL_SEED_START  # noqa: E402
from edge.segmenter import Segmenter  # noqa: E402
from edge.textcal import (  # noqa: E402
    best_similarities,
    calibrate,
    demo_samples,
    write_threshold,
)

CHOOSE_SEED = EVAL_SEED_START + 850_000
CHECK_SEED = EVAL_SEED_START + 860_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40, help="scenes per set (40)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="store it in the demo bundle")
    args = ap.parse_args()

    seg = Segmenter.load(demo_bundle(), threads=args.threads)
    measured = calibrate(seg, demo_samples(args.count, CHOOSE_SEED))
    t = measured["threshold"]
    pos: list[float] = []
    neg: list[float] = []
    for s in demo_samples(args.count, CHECK_SEED):
        sims = best_similarities(seg, s.image, [*s.positives, *s.negatives])
        pos += sims[: len(s.positives)]
        neg += sims[len(s.positives) :]
    p, n = np.asarray(pos), np.asarray(neg)
    check = {
        "images": args.count,
        "seeds": f"{CHECK_SEED}..{CHECK_SEED + args.count - 1}",
        "true_accept": round(float((p >= t).mean()), 4),
        "true_reject": round(float((n < t).mean()), 4),
    }
    measured["seeds"] = f"{CHOOSE_SEED}..{CHOOSE_SEED + args.count - 1}"
    measured["check"] = check
    print(json.dumps(measured, indent=2))
    if args.write:
        path = write_threshold(
            demo_bundle(), measured, "scripts/calibrate_text_demo.py (held-out demo scenes)"
        )
        print(f"wrote clip.text_threshold = {t} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
