"""Operation counts and per-operator time of a detector, from onnxruntime's own profile.

``edge`` cannot import ``onnx``, and int8 graphs hide their weight shapes after pre-packing, so
counts come from one profiled run of the **fp32** graph as onnxruntime executes it (after its
graph optimisations): every node event carries its input and output shapes.

Counted (multiply-add = 2 operations):

- ``Conv``/``FusedConv``/``NhwcFusedConv``: ``2 * prod(output) * prod(weight[1:])`` (weight is
  ``(C_out, C_in / groups, kh, kw)``);
- ``ConvTranspose``: ``2 * prod(input) * prod(weight[1:])`` (weight ``(C_in, C_out/g, kh, kw)``);
  where the profiler hides the pre-packed weight, ``2 * prod(output) * C_in`` (exact when the
  kernel equals the stride, as in YOLOv8's 2x2 stride-2 prototype upsampling);
- ``MatMul``/``FusedMatMul``/``Gemm``: ``2 * prod(output) * K`` (``K`` = A's last dimension).

Element-wise, activation, resize and softmax nodes are not counted: for a YOLOv8-seg graph they
are < 1 % of the operations, but not of the time, which is why the per-operator time is reported
next to the count. The int8 graph performs the same convolutions, so the fp32 count is used for
both precisions ("operations", reported as GOP).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

_CONV_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "NhwcConv"}
_MATMUL_OPS = {"MatMul", "FusedMatMul", "Gemm"}


def _shapes(entries: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def node_ops(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """Operations (2 per multiply-add) of one profiled node; 0 for uncounted operator types.

    Args:
        op: onnxruntime operator name (after graph optimisation).
        inputs: Input shapes as recorded by the profiler.
        outputs: Output shapes.
    """
    if op in _CONV_OPS and len(inputs) >= 2 and outputs:
        return 2 * int(np.prod(outputs[0])) * int(np.prod(inputs[1][1:]))
    if op == "ConvTranspose" and inputs and outputs:
        if len(inputs) >= 2 and len(inputs[1]) == len(inputs[0]):
            return 2 * int(np.prod(inputs[0])) * int(np.prod(inputs[1][1:]))
        return 2 * int(np.prod(outputs[0])) * int(inputs[0][1])
    if op in _MATMUL_OPS and inputs and outputs and inputs[0]:
        return 2 * int(np.prod(outputs[0])) * int(inputs[0][-1])
    return 0


def summarize_profile(events: list[dict[str, Any]], runs: int = 1) -> dict[str, Any]:
    """Operation count and time per operator type from an onnxruntime profile trace.

    Args:
        events: The profile JSON (a list of trace events).
        runs: Number of ``session.run`` calls the trace holds; counts are per run.

    Returns:
        ``{"gop": float, "ops_by_type": {op: gop}, "ms_by_type": {op: ms per run},
        "nodes": int}`` (``ms_by_type`` sorted by time, descending).
    """
    ops: dict[str, float] = defaultdict(float)
    ms: dict[str, float] = defaultdict(float)
    nodes = 0
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        nodes += 1
        ms[op] += e.get("dur", 0) / 1e3
        ins = _shapes(args.get("input_type_shape", []))
        ops[op] += node_ops(op, ins, _shapes(args.get("output_type_shape", [])))
    runs = max(runs, 1)
    return {
        "gop": sum(ops.values()) / runs / 1e9,
        "ops_by_type": {k: v / runs / 1e9 for k, v in sorted(ops.items()) if v},
        "ms_by_type": {
            k: v / runs for k, v in sorted(ms.items(), key=lambda kv: kv[1], reverse=True)
        },
        "nodes": nodes // runs,
    }


def profile_model(
    model_path: str | Path,
    input_shape: tuple[int, ...],
    threads: int,
    runs: int = 3,
    optimization: str = "all",
) -> dict[str, Any]:
    """Profile ``runs`` inferences of a detector on a zero-filled input (after one warm-up).

    Args:
        model_path: ONNX file.
        input_shape: NCHW input shape.
        threads: Intra-op threads.
        runs: Profiled runs after the warm-up.
        optimization: Session graph optimisation level (:func:`edge.session.create_session`).

    Returns:
        :func:`summarize_profile` of the timed runs; the trace file is deleted.
    """
    from edge.session import create_session

    with tempfile.TemporaryDirectory(prefix="fastsam-prof-") as tmp:
        session = create_session(
            model_path,
            threads=threads,
            optimization=optimization,
            profile_prefix=os.path.join(tmp, "p"),
        )
        name = session.get_inputs()[0].name
        x = np.zeros(input_shape, np.float32)
        session.run(None, {name: x})  # warm-up: first-run allocations and pre-packing
        for _ in range(runs):
            session.run(None, {name: x})
        path = session.end_profiling()
        events = json.loads(Path(path).read_text())
    # Drop the warm-up run: the first "model_run" event and every node event before its end.
    run_events = [e for e in events if e.get("name") == "model_run"]
    if len(run_events) > runs:
        first = run_events[0]
        cut = first["ts"] + first["dur"]
        events = [e for e in events if e.get("ts", 0) >= cut]
    return summarize_profile(events, runs)
