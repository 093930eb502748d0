"""``fastsam-edge bench``: honest latency, memory and efficiency numbers for this board.

Modules: :mod:`~edge.bench.run` (the sweep driver and the recommendation),
:mod:`~edge.bench.worker` (one configuration per process), :mod:`~edge.bench.system`
(machine facts, temperature, clocks, throttling, peak RSS), :mod:`~edge.bench.peak` (MatMul
peak through onnxruntime), :mod:`~edge.bench.report` (Markdown and OpenCV plots),
:mod:`~edge.bench.service` (the service-replay rows), :mod:`~edge.bench.track` (tracking
on moving-objects sequences: id consistency, id switches, the tracker's cost),
:mod:`~edge.bench.stream` (a local MJPEG camera and a stream's latency through the service),
:mod:`~edge.bench.vocab` (what an open vocabulary costs, YOLOE bundles),
:mod:`~edge.bench.text` (what a text prompt costs against everything mode, and its agreement
with the all-masks choice),
:mod:`~edge.bench.cli`; the operation
count is :mod:`edge.opcount` (the export uses it too).
"""

from __future__ import annotations

from edge.bench.cli import add_bench_arguments, bench_images, cmd_bench, parse_threads
from edge.bench.report import draw_plot, draw_sustained, to_markdown
from edge.bench.run import BenchPlan, choose_confs, recommend, run_bench
from edge.bench.system import board_state, machine_facts, peak_rss_mb

__all__ = [
    "BenchPlan",
    "add_bench_arguments",
    "bench_images",
    "board_state",
    "choose_confs",
    "cmd_bench",
    "draw_plot",
    "draw_sustained",
    "machine_facts",
    "parse_threads",
    "peak_rss_mb",
    "recommend",
    "run_bench",
    "to_markdown",
]
