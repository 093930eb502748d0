"""The one place that creates onnxruntime sessions."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edge.errors import BundleError, InputError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def default_threads() -> int:
    """Intra-op threads when the caller does not choose: ``OMP_NUM_THREADS`` or all cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def _libc(name: str) -> object:
    try:
        return getattr(ctypes.CDLL(None), name)  # glibc; musl and macOS lack these
    except (AttributeError, OSError):
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LOAD_MMAP_THRESHOLD = 128 << 10
"""glibc's mmap threshold while a transient session loads (:func:`create_session`)."""
RUN_MMAP_THRESHOLD = 32 << 20
"""The threshold after it: glibc's own upper bound (its default grows to it as blocks are
freed), fixed, so that activations up to 32 MiB come from the heap and are reused within a
run (trimmed after it) instead of being mapped and zeroed afresh."""


def release_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``).

    Loading an onnxruntime session frees more than it keeps (the parsed model, graph copies
    made while optimising: MobileCLIP2-S0's dense encoder peaks at ~125 MiB and keeps ~50), and
    glibc keeps freed heap memory resident for reuse. Called after a transient session is
    created or dropped, the next one is loaded into returned pages instead of on top of them.

    Returns:
        Whether anything could be asked of the allocator (``False`` off glibc).
    """
    if _TRIM is None:
        return False
    _TRIM(0)  # type: ignore[operator]
    return True


def create_session(
    model_path: str | Path | bytes,
    threads: int | None = None,
    providers: tuple[str, ...] | list[str] = DEFAULT_PROVIDERS,
    optimization: str = "all",
    spinning: bool = False,
    profile_prefix: str | None = None,
    transient: bool = False,
) -> ort.InferenceSession:
    """Create an inference session with explicit threading and graph optimisation.

    Args:
        model_path: ONNX file, or serialized model bytes.
        threads: Intra-op threads (``None``: :func:`default_threads`). Inter-op is 1: the graphs
            are sequential and extra pools only cost memory on a Pi.
        providers: Execution providers, each of which must be available.
        optimization: ``"all"``, ``"extended"``, ``"basic"`` or ``"disable"``.
        spinning: Let idle intra-op threads busy-wait. Off by default: on a Pi that also runs
            the camera stack (or a shared machine) spinning threads steal the cores the next
            frame needs; turn it on for lowest latency on an otherwise idle board.
        profile_prefix: Write onnxruntime's per-node profile (``session.end_profiling()``
            returns its path) under this file prefix; ``None`` = no profiling.
        transient: A session whose memory should not stay resident between runs (CLIP's: a
            few runs per text prompt, next to a detector that runs every frame): no arena and
            no memory pattern, loaded with glibc's mmap threshold at
            :data:`LOAD_MMAP_THRESHOLD` (the load's big temporary blocks get their own mappings
            and go back when freed) and run with :func:`run_transient`. Measured on a
            MobileCLIP2-S0 int8 bundle (docs/benchmarks.md, issue 27): peak RSS of three new
            words 397 -> 341 MiB, its dense map ~10 % slower. The detector keeps the default
            (arena and pattern: fastest for every frame).

    Returns:
        The session.

    Raises:
        ValueError: Unknown provider or optimisation level.
        InputError: Bad thread count (also a ValueError).
        BundleError: The model file cannot be loaded.
    """
    available = ort.get_available_providers()
    for p in providers:
        if p not in available:
            raise ValueError(f"providers: {p!r} is not available; available: {available}")
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads: expected a positive integer, got {threads!r}")
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization: expected one of {list(levels)}, got {optimization!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[optimization]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if transient:
        opts.enable_mem_pattern = False
        opts.enable_cpu_mem_arena = False
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    model = model_path if isinstance(model_path, bytes) else str(model_path)
    low = transient and _MALLOPT is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ
    if low:  # the load's big temporary blocks in their own mappings, returned when freed
        _MALLOPT(_M_MMAP_THRESHOLD, LOAD_MMAP_THRESHOLD)  # type: ignore[operator]
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types
        where = "<model bytes>" if isinstance(model_path, bytes) else repr(str(model_path))
        raise BundleError(f"model: cannot load {where}: {exc}") from exc
    finally:
        if low:
            _MALLOPT(_M_MMAP_THRESHOLD, RUN_MMAP_THRESHOLD)  # type: ignore[operator]
        if transient:
            release_memory()


def run_transient(session: ort.InferenceSession, feed: dict[str, Any]) -> list[Any]:
    """``session.run(None, feed)`` for a ``transient=True`` session, then the freed pages given
    back (:func:`release_memory`), so its activations do not stay resident after the run.
    """
    out = session.run(None, feed)
    release_memory()
    return list(out)
