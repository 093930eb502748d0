#!/usr/bin/env bash
# Needs the export extra and the bundles in work/bench (see docs/benchmarks.md, "Bundles").
# Usage: scripts/bench_report.sh [A|B|D|E|F|G|all]
# The measurements behind docs/benchmarks.md (run on an otherwise idle machine, in this order).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${VENV:-.venv}/bin:$PATH"
B=work/bench
OUT=docs/bench
step=${1:-all}
if [[ $step == all || $step == A ]]; then
  # issue 3: FastSAM-s 640, 640x480 and 1080p, ~20/100/300 masks, vs ultralytics (.pt, ONNX)
  fastsam-edge bench --bundle $B/s640 --compare-reference $B/FastSAM-s-shapes.pt \
    --sizes 640x480,1920x1080 --masks 20,100,300 --threads 2 --modes everything \
    --runs 5 --warmup 2 --out $OUT/fastsam-s-640 2>&1 | tail -3
fi
if [[ $step == all || $step == B ]]; then
  # issue 6: s/x at 640/1024, fp32/int8, threads 1/2, every prompt mode, reference, sustained
  fastsam-edge bench --bundle $B/s640 --bundle $B/s1024 --bundle $B/x640 --bundle $B/x1024 \
    --compare-reference $B/FastSAM-s-shapes.pt --compare-reference $B/FastSAM-s-shapes.pt \
    --compare-reference $B/FastSAM-x-arch.pt --compare-reference $B/FastSAM-x-arch.pt \
    --sizes 640x480 --masks 100 --threads 1,2 --modes everything,point,box,text \
    --runs 3 --warmup 1 --sustained 120 --target-fps 2 --out $OUT/sweep 2>&1 | tail -3
fi
if [[ $step == all || $step == D ]]; then
  # issue 27: a text prompt against everything mode (new word, second word), peak RSS, and
  # the agreement with the all-masks choice on busy demo scenes (demo bundle)
  fastsam-edge bench --text-cost --bundle $B/s640 --precision int8 --threads 2 --runs 5 \
    --out $OUT/text 2>&1 | tail -12
fi
if [[ $step == all || $step == E ]]; then
  python scripts/eval_edge.py --bundle $B/s640 --scenes 100 --sizes 640x640,640x480 > $OUT/eval-s640.json
  cat $OUT/eval-s640.json
fi
if [[ $step == all || $step == F ]]; then
  # issue 12: the service path vs segment-only, demo bundle, JPEG replays of the demo scenes
  R=work/replay
  for wh in 640x480 1280x960 1920x1080; do
    [[ -d $R/$wh ]] || python -c "from edge.bench.service import write_scene_replay as w; \
      w('$R/$wh', ${wh%x*}, ${wh#*x}, 8)"
  done
  fastsam-edge bench --service-replay $R/640x480 --service-replay $R/1280x960 \
    --service-replay $R/1920x1080 --masks 20,100 --precision int8 --threads 2 --rounds 3 \
    --out $OUT/service 2>&1 | tail -20
fi
if [[ $step == all || $step == G ]]; then
  # issue 13: serial vs staged service (the masks-in-bounded-memory before/after was a one-off,
  # see docs/benchmarks.md)
  S=${S13:-$B/s640}  # docs/benchmarks.md used the FastSAM-s architecture, seeded head, int8
  R=work/replay
  fastsam-edge bench --bundle $S --service-replay $R/640x480 --service-replay $R/1280x960 \
    --service-replay $R/1920x1080 --masks 100 --precision int8 --threads 2 --rounds 3 \
    --out $OUT/service-staged 2>&1 | tail -12
fi
