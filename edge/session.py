"""The one place that creates onnxruntime sessions."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import onnxruntime as ort

from edge.errors import BundleError, InputError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def default_threads() -> int:
    """Intra-op threads when the caller does not choose: ``OMP_NUM_THREADS`` or all cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


MMAP_THRESHOLD = 1 << 20
"""Heap blocks above this many bytes get their own mapping once CLIP is loaded
(:func:`limit_heap_reuse`)."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _libc(name: str) -> object:
    try:
        return getattr(ctypes.CDLL(None), name)  # glibc; musl and macOS lack these
    except (AttributeError, OSError):
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")


def limit_heap_reuse(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (``mallopt(M_MMAP_THRESHOLD)``) at ``threshold`` bytes.

    glibc raises the threshold (up to 32 MiB) each time a large mapped block is freed, so after
    an onnxruntime session has loaded, the activations of CLIP's arena-less sessions (blocks of
    1-30 MiB) are served from the heap, which then fragments and keeps its high-water mark.
    A fixed threshold gives every larger block its own mapping, returned when freed: peak RSS
    of ``segment --text`` on a MobileCLIP2-S0 int8 bundle 364 -> 304 MiB, three new words 397
    -> 336 MiB (docs/benchmarks.md, issue 27). The environment's ``MALLOC_MMAP_THRESHOLD_``
    wins where set.

    Returns:
        Whether it was set (``False`` off glibc or when the environment sets it).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise InputError(f"threshold: expected a positive integer, got {threshold!r}")
    if _MALLOPT is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, threshold))  # type: ignore[operator]


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
    arena: bool = True,
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
        arena: Keep onnxruntime's CPU memory arena and its memory-pattern planning (fastest
            for a session that runs every frame, e.g. the detector). ``False`` allocates
            each activation when needed and frees it after the run: a few % slower, but the
            session's peak activations do not stay resident between runs (CLIP's sessions,
            which run a few times per text prompt and whose dense map at 640 px would
            otherwise pin ~100 MiB of arena).

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
    if not arena:
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    model = model_path if isinstance(model_path, bytes) else str(model_path)
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types
        where = "<model bytes>" if isinstance(model_path, bytes) else repr(str(model_path))
        raise BundleError(f"model: cannot load {where}: {exc}") from exc
