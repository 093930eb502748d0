"""The model bundle and its manifest, ``bundle.json``: the single source of model facts.

A bundle is a directory with fixed file names::

    bundle.json           manifest (this module's schema)
    fastsam.fp32.onnx     detector, float32
    fastsam.int8.onnx     detector, static int8 QDQ (optional)

A YOLOE (open-vocabulary) bundle's detector has the same names and adds, described by its
``yoloe`` section (:class:`YoloeSection`)::

    yoloe_head.npz        text adapter and folded contrastive heads (edge.yoloe.YoloeHead)
    vocabulary.npy        raw (K, D) embeddings of the default vocabulary (optional)
    yoloe_text.*.onnx     the text tower, fp32 / int8 (optional), with the tokenizer's BPE file

The export side (``fastsam-export``) writes it and the runtime reads it; both use this schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import BundleError
from edge.paths import check_regular_file, describe_path_kind

SCHEMA_VERSION = 1
MANIFEST_NAME = "bundle.json"
DETECTOR_FILES = {"fp32": "fastsam.fp32.onnx", "int8": "fastsam.int8.onnx"}
DEFAULT_CONF = 0.4
DEFAULT_IOU = 0.9
DEFAULT_MAX_DET = 300
DEFAULT_LOGIT_SCALE = 100.0
"""CLIP's similarity scale when a bundle does not record one (OpenAI's CLIP: exp(4.6052))."""
CLIP_PRECISIONS = ("fp32", "int8")
# Crops per image-encoder call when the bundle does not say (``clip.image.max_batch``). Above
# this, encode_images runs several calls of at most this many crops. Per-crop time is flat in
# the batch (measured 1 to 32) while activation memory is not: ViT-B/32 int8 peaks at 275 MiB
# with 8 crops per call and 368 MiB with 32. The export stage writes 8 for ViTs and 2 for conv
# towers (MobileCLIP: ~18 MiB of activations per crop).
MAX_CLIP_BATCH = 8
MAX_CLIP_BATCH_LIMIT = 1024
NO_CLIP_HINT = (
    "this bundle has no CLIP text support; re-export with fastsam-export WEIGHTS --out DIR "
    "--clip ViT-B-32-quickgelu --clip-pretrained openai"
)
"""The one message for a bundle without CLIP (text prompts, calibration, bench, doctor)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_MISSING: Any = object()


def _field(d: Any, key: str, where: str, default: Any = _MISSING) -> Any:
    if not isinstance(d, dict):
        raise BundleError(f"bundle.json is malformed: {where}: expected an object, got {d!r}")
    if key not in d:
        if default is _MISSING:
            raise BundleError(f"bundle.json is malformed: {where}.{key} is missing")
        return default
    return d[key]


def _bad(path: str, expected: str, value: Any) -> BundleError:
    return BundleError(f"bundle.json is malformed: {path}: expected {expected}, got {value!r}")


def _strict_int(value: Any, path: str, lo: int | None = None) -> int:
    """An int that is really one: ``true``, ``2.7``, ``640.0`` and ``"13161994"`` are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "an integer" + (f" >= {lo}" if lo is not None else ""), value)
    if lo is not None and value < lo:
        raise _bad(path, f"an integer >= {lo}", value)
    return value


def _strict_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(path, "true or false", value)
    return value


def _strict_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _bad(path, "a number in [0, 1]", value)
    return float(value)


def _optional_positive(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _bad(path, "a positive number", value)
    return float(value)


def _strict_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, "a string", value)
    return value


@dataclass(frozen=True)
class InputSpec:
    """Detector input facts.

    Attributes:
        dynamic: Dynamic H/W: the image is letterboxed to the minimum stride-multiple rectangle
            inside ``imgsz`` (the reference's ``rect`` mode).
        imgsz: (height, width) target of the letterbox; for static models the exact input shape.
        stride: Model stride.
        name: ONNX input name.
    """

    dynamic: bool
    imgsz: tuple[int, int]
    stride: int = 32
    name: str = "images"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Parse the ``input`` section of the manifest (types are checked, not coerced).

        Raises:
            BundleError: Missing key, wrong type (``"dynamic": "false"``, a float ``imgsz``),
                a stride below 1 or an ``imgsz`` that is not a positive multiple of it.
        """
        dynamic = _field(d, "dynamic", "input")
        if not isinstance(dynamic, bool):
            raise _bad("input.dynamic", "true or false", dynamic)
        stride = _strict_int(_field(d, "stride", "input", 32), "input.stride", lo=1)
        imgsz = _field(d, "imgsz", "input")
        if (
            not isinstance(imgsz, list)
            or len(imgsz) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in imgsz)
        ):
            raise _bad("input.imgsz", "[height, width], two positive integers", imgsz)
        if any(v % stride for v in imgsz):
            raise _bad("input.imgsz", f"multiples of input.stride ({stride})", imgsz)
        return cls(
            dynamic=dynamic,
            imgsz=(imgsz[0], imgsz[1]),
            stride=stride,
            name=_strict_str(_field(d, "name", "input", "images"), "input.name"),
        )


@dataclass(frozen=True)
class Thresholds:
    """Default post-processing thresholds (FastSAM's reference setting)."""

    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle with its integrity facts."""

    sha256: str
    bytes: int
    role: str
    precision: str | None = None

    @classmethod
    def from_dict(cls, name: str, d: Any) -> FileEntry:
        """Parse one ``files`` entry; ``"bytes": "13161994"`` is a type error, not a mismatch."""
        where = f"files.{name}"
        if not isinstance(d, dict):
            raise _bad(where, "an object", d)
        unknown = sorted(set(d) - {"sha256", "bytes", "role", "precision"})
        if unknown:
            raise BundleError(f"bundle.json is malformed: {where}: unknown key(s) {unknown}")
        sha = _strict_str(_field(d, "sha256", where), f"{where}.sha256")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise _bad(f"{where}.sha256", "64 lowercase hex digits", sha)
        precision = _field(d, "precision", where, None)
        if precision is not None:
            precision = _strict_str(precision, f"{where}.precision")
        return cls(
            sha256=sha,
            bytes=_strict_int(_field(d, "bytes", where), f"{where}.bytes", lo=0),
            role=_strict_str(_field(d, "role", where), f"{where}.role"),
            precision=precision,
        )


MEMORY_KINDS = ("segment", "text")


@dataclass(frozen=True)
class MemoryProfile:
    """Peak resident memory of one ``segment`` run, measured by ``fastsam-export``.

    Each figure is the peak RSS (``VmHWM``) of a fresh process that loads the bundle at one
    detector precision and segments one frame (``segment``), or also answers one text prompt
    with the bundle's default CLIP precision (``text``, only for bundles with CLIP). The service's
    ``MemoryMax=`` and ``fastsam-edge doctor`` are derived from it.

    Attributes:
        peak_mib: Detector precision -> kind (``segment``, ``text``) -> peak RSS in MiB.
        frame_hw: (height, width) of the measured frame.
        threads: onnxruntime intra-op threads of the measurement.
        machine: ``platform.machine()`` of the measuring host.
        onnxruntime: onnxruntime version of the measurement.
    """

    peak_mib: dict[str, dict[str, float]]
    frame_hw: tuple[int, int]
    threads: int
    machine: str = ""
    onnxruntime: str = ""

    @classmethod
    def from_dict(cls, d: Any) -> MemoryProfile:
        """Parse the ``memory`` section, raising :class:`BundleError` when malformed."""
        try:
            peaks: dict[str, dict[str, float]] = {}
            for precision, kinds in dict(d["peak_mib"]).items():
                if precision not in DETECTOR_FILES:
                    raise ValueError(f"unknown precision {precision!r}")
                row = {}
                for kind, mib in dict(kinds).items():
                    if kind not in MEMORY_KINDS or isinstance(mib, bool) or not float(mib) > 0:
                        raise ValueError(f"bad entry {precision}.{kind} = {mib!r}")
                    row[str(kind)] = float(mib)
                peaks[str(precision)] = row
            return cls(
                peak_mib=peaks,
                frame_hw=(int(d["frame_hw"][0]), int(d["frame_hw"][1])),
                threads=int(d["threads"]),
                machine=str(d.get("machine", "")),
                onnxruntime=str(d.get("onnxruntime", "")),
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle.json memory: malformed section: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able ``memory`` section."""
        return {
            "peak_mib": {p: dict(k) for p, k in sorted(self.peak_mib.items())},
            "frame_hw": list(self.frame_hw),
            "threads": self.threads,
            "machine": self.machine,
            "onnxruntime": self.onnxruntime,
        }

    def peak(self, precision: str | None = None, text: bool = True) -> float | None:
        """The largest measured peak in MiB.

        Args:
            precision: Detector precision; ``None`` = the largest over all precisions.
            text: Include the text-prompt runs (a service that may answer text prompts).

        Returns:
            MiB, or ``None`` when nothing was measured for that precision.
        """
        rows = [self.peak_mib[precision]] if precision else list(self.peak_mib.values())
        values = [
            mib for row in rows if row for kind, mib in row.items() if text or kind != "text"
        ]
        return max(values) if values else None


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "an object", value)
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(path, "a number", value)
    return float(value)


def _optional_number(value: Any, path: str) -> float | None:
    return None if value is None else _number(value, path)


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(path, "a list of strings", value)
    return tuple(_strict_str(v, f"{path}[{i}]") for i, v in enumerate(value))


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(path, "a list", value)
    return value


@dataclass(frozen=True)
class Int8Target:
    """What an int8 plan must reach on the held-out images (``quantization.plan.target``).

    Attributes:
        min_iou: Mean mask IoU against fp32, both ways (fp32->int8 and int8->fp32).
        max_recall_loss: Recall lost against fp32 (0.01 = 1 point).
        min_speedup: Speed floor: int8 at least this many times faster than fp32 on the export
            host; plans below it are not taken.
    """

    min_iou: float = 0.97
    max_recall_loss: float = 0.01
    min_speedup: float = 1.3

    def describe(self) -> str:
        """One line, e.g. ``mean IoU >= 0.97 both ways, recall loss <= 1.0 pt``."""
        return (
            f"mean IoU >= {self.min_iou:g} both ways, recall loss <= "
            f"{100 * self.max_recall_loss:.1f} pt"
        )

    @classmethod
    def from_json(cls, d: Any, where: str = "quantization.plan.target") -> Int8Target:
        """Parse, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, where)
        return cls(
            min_iou=_strict_number(_field(d, "min_iou", where), f"{where}.min_iou"),
            max_recall_loss=_strict_number(
                _field(d, "max_recall_loss", where), f"{where}.max_recall_loss"
            ),
            min_speedup=_number(_field(d, "min_speedup", where), f"{where}.min_speedup"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class PlanTrial:
    """One int8 candidate the export measured on the held-out images.

    Attributes:
        name: What it is (``fixed``, ``percentile``, ``+ float /model.22/proto`` ...).
        calibration: Activation ranges: ``minmax``, ``percentile``, ``mixed`` (per tensor) or
            ``minmax+more-images``.
        float_blocks: Blocks kept float on top of the fixed recipe's float nodes.
        mean_iou_fp32_to_int8: Mean over fp32's masks of the best int8 IoU.
        mean_iou_int8_to_fp32: The other way.
        recall_loss: Recall lost against fp32 (see ``HeldOut.recall_basis``).
        speedup: int8 / fp32 speed on the export host, interleaved (``None``: not timed).
        meets_target: Agreement and recall within the target (speed checked separately).
        kernels: ``host`` or ``reference`` (the kernels it was measured with).
        images: Held-out images it was measured on: all of them (``None``), or the first few
            when screening showed it could not reach the target (not measured further).
    """

    name: str
    calibration: str
    float_blocks: tuple[str, ...]
    mean_iou_fp32_to_int8: float
    mean_iou_int8_to_fp32: float
    recall_loss: float
    speedup: float | None
    meets_target: bool
    kernels: str
    images: int | None = None

    @property
    def agreement(self) -> float:
        """The smaller of the two mean IoUs."""
        return min(self.mean_iou_fp32_to_int8, self.mean_iou_int8_to_fp32)

    @classmethod
    def from_json(cls, d: Any, where: str) -> PlanTrial:
        """Parse, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, where)

        def get(key: str) -> Any:
            return _field(d, key, where)

        return cls(
            name=_strict_str(get("name"), f"{where}.name"),
            calibration=_strict_str(get("calibration"), f"{where}.calibration"),
            float_blocks=_str_list(get("float_blocks"), f"{where}.float_blocks"),
            mean_iou_fp32_to_int8=_strict_number(
                get("mean_iou_fp32_to_int8"), f"{where}.mean_iou_fp32_to_int8"
            ),
            mean_iou_int8_to_fp32=_strict_number(
                get("mean_iou_int8_to_fp32"), f"{where}.mean_iou_int8_to_fp32"
            ),
            recall_loss=_number(get("recall_loss"), f"{where}.recall_loss"),
            speedup=_optional_number(d.get("speedup"), f"{where}.speedup"),
            meets_target=bool(get("meets_target")),
            kernels=_strict_str(get("kernels"), f"{where}.kernels"),
            images=(
                None if d.get("images") is None else _strict_int(d["images"], f"{where}.images", 1)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        out = asdict(self)
        out["float_blocks"] = list(self.float_blocks)
        if self.images is None:
            del out["images"]
        return out


@dataclass(frozen=True)
class FloatBlock:
    """A block of the detector that the chosen int8 plan keeps float.

    Attributes:
        block: Module path prefix of its nodes (e.g. ``/model.22/cv4.0``).
        nodes: ONNX nodes in it.
        reason: Why (its measured sensitivity: agreement gained by keeping it float).
        speed_cost_ms: int8 time added by keeping it float on the export host (``None``: not
            measured).
    """

    block: str
    nodes: int
    reason: str
    speed_cost_ms: float | None = None

    @classmethod
    def from_json(cls, d: Any, where: str) -> FloatBlock:
        """Parse, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, where)
        return cls(
            block=_strict_str(_field(d, "block", where), f"{where}.block"),
            nodes=_strict_int(_field(d, "nodes", where), f"{where}.nodes", 0),
            reason=_strict_str(_field(d, "reason", where), f"{where}.reason"),
            speed_cost_ms=_optional_number(d.get("speed_cost_ms"), f"{where}.speed_cost_ms"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class Int8Plan:
    """``quantization.plan``: the per-block precision plan the export chose, and how.

    Attributes:
        mode: ``search`` (cheap fixes, then sensitivity-ranked float blocks) or ``fixed`` (the
            old single recipe).
        target: What the plan had to reach.
        chosen: Name of the chosen candidate (one of ``tried``).
        meets_target: Whether it reached the target within the speed floor.
        float_blocks: Blocks it keeps float beyond the fixed recipe's float nodes.
        tried: Every candidate measured, in order.
        sensitivity: Block -> agreement gained by keeping only that block float (the ranking of
            the float fallbacks; empty when none was needed).
        notes: Fixes not tried, and why.
        speed_floor: Whether ``target.min_speedup`` was applied (``False``: the export host's
            int8 kernels are not a Pi's, so its int8 speed was not a criterion; see ``notes``).
    """

    mode: str
    target: Int8Target
    chosen: str
    meets_target: bool
    float_blocks: tuple[FloatBlock, ...] = ()
    tried: tuple[PlanTrial, ...] = ()
    sensitivity: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    speed_floor: bool = True

    @classmethod
    def from_json(cls, d: Any) -> Int8Plan:
        """Parse, raising :class:`BundleError` naming a malformed field."""
        where = "quantization.plan"
        d = _object(d, where)
        sens = _object(d.get("sensitivity", {}), f"{where}.sensitivity")
        notes = _object(d.get("notes", {}), f"{where}.notes")
        return cls(
            mode=_strict_str(_field(d, "mode", where), f"{where}.mode"),
            target=Int8Target.from_json(_field(d, "target", where)),
            chosen=_strict_str(_field(d, "chosen", where), f"{where}.chosen"),
            meets_target=bool(_field(d, "meets_target", where)),
            float_blocks=tuple(
                FloatBlock.from_json(b, f"{where}.float_blocks[{i}]")
                for i, b in enumerate(_list(d.get("float_blocks", []), f"{where}.float_blocks"))
            ),
            tried=tuple(
                PlanTrial.from_json(t, f"{where}.tried[{i}]")
                for i, t in enumerate(_list(d.get("tried", []), f"{where}.tried"))
            ),
            sensitivity={k: _number(v, f"{where}.sensitivity.{k}") for k, v in sens.items()},
            notes={k: _strict_str(v, f"{where}.notes.{k}") for k, v in notes.items()},
            speed_floor=_strict_bool(d.get("speed_floor", True), f"{where}.speed_floor"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return {
            "mode": self.mode,
            "target": self.target.to_json(),
            "chosen": self.chosen,
            "meets_target": self.meets_target,
            "float_blocks": [b.to_json() for b in self.float_blocks],
            "tried": [t.to_json() for t in self.tried],
            "sensitivity": dict(self.sensitivity),
            "notes": dict(self.notes),
            "speed_floor": self.speed_floor,
        }


@dataclass(frozen=True)
class HeldOut:
    """``quantization.held_out``: the images the int8 check measured on (never calibrated on).

    Attributes:
        images: Held-out images.
        source: Where they came from (every k-th calibration image, or ``--verify-images``).
        calibration_images: Images the ranges were calibrated on (the rest).
        recall_basis: ``ground truth`` (built-in scenes: recall fp32 minus recall int8) or
            ``fp32 masks`` (the share of fp32's masks int8 misses at IoU 0.5).
    """

    images: int
    source: str
    calibration_images: int
    recall_basis: str

    @classmethod
    def from_json(cls, d: Any) -> HeldOut:
        """Parse, raising :class:`BundleError` naming a malformed field."""
        where = "quantization.held_out"
        d = _object(d, where)
        return cls(
            images=_strict_int(_field(d, "images", where), f"{where}.images", 1),
            source=_strict_str(_field(d, "source", where), f"{where}.source"),
            calibration_images=_strict_int(
                _field(d, "calibration_images", where), f"{where}.calibration_images", 1
            ),
            recall_basis=_strict_str(_field(d, "recall_basis", where), f"{where}.recall_basis"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class QuantSection:
    """``bundle.json``'s ``quantization``: how ``fastsam.int8.onnx`` was made and checked.

    Written by the exporter (its ``quantize_detector``); the runtime only reports
    it (``fastsam-edge info``). JSON: the recipe's keys, then ``calibration_source``,
    ``held_out``, ``verify``, ``verify_host``, ``plan``, ``host_differs`` (only when true) and
    ``status``. Bundles from before issue 26 have no ``held_out``: their ``verify`` was
    measured on the calibration images themselves (in-sample).

    Attributes:
        recipe: How it was quantized (``format``, ``weights``, ``activations``,
            ``calibration``, ``float_branches``, ``float_nodes``, ...), verbatim.
        status: ``"ok"`` or ``"refused: ..."`` (the int8 file was then left out).
        calibration_source: What it was calibrated on (a directory or the built-in scenes).
        verify: Agreement with fp32 on the CPU-independent reference kernels (with this
            host's speed); held-out when ``held_out`` is set.
        verify_host: The same on the export host's kernels, with its CPU class.
        host_differs: The two agreements differ by more than the tolerance.
        held_out: The held-out images ``verify`` was measured on (``None``: an old, in-sample
            check).
        plan: The per-block precision plan and the candidates tried (``None``: older bundles).
    """

    recipe: dict[str, Any]
    status: str | None = None
    calibration_source: str | None = None
    verify: dict[str, Any] | None = None
    verify_host: dict[str, Any] | None = None
    host_differs: bool = False
    held_out: HeldOut | None = None
    plan: Int8Plan | None = None

    _KEYS = (
        "calibration_source", "verify", "verify_host", "host_differs", "status", "held_out",
        "plan",
    )  # fmt: skip

    @property
    def ok(self) -> bool:
        """Whether the int8 model passed its check (and is in the bundle)."""
        return self.status == "ok"

    @classmethod
    def from_json(cls, d: Any) -> QuantSection:
        """Parse the section, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, "quantization")
        status = d.get("status")
        source = d.get("calibration_source")
        for key in ("verify", "verify_host"):
            if d.get(key) is not None:
                _object(d[key], f"quantization.{key}")
        return cls(
            recipe={k: v for k, v in d.items() if k not in cls._KEYS},
            status=None if status is None else _strict_str(status, "quantization.status"),
            calibration_source=None if source is None else str(source),
            verify=d.get("verify"),
            verify_host=d.get("verify_host"),
            host_differs=bool(d.get("host_differs", False)),
            held_out=None if d.get("held_out") is None else HeldOut.from_json(d["held_out"]),
            plan=None if d.get("plan") is None else Int8Plan.from_json(d["plan"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON section (keys in the order the exporter has always written them)."""
        out = dict(self.recipe)
        for key in ("calibration_source", "held_out", "verify", "verify_host", "plan"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json() if hasattr(value, "to_json") else value
        if self.host_differs:
            out["host_differs"] = True
        if self.status is not None:
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class DenseSection:
    """``clip.dense``: the dense image encoder of a conv tower (the text prefilter's map).

    Attributes:
        files: Precision -> file name.
        stride: Input pixels per output cell (32 for FastViT/MobileOne towers).
        long_side: Default input size (longer side, pixels).
        verify: ONNX vs torch agreement of the map (``None``: not recorded).
        other: Any further keys, verbatim.
    """

    files: dict[str, str]
    stride: int
    long_side: int
    verify: dict[str, Any] | None = None
    other: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("files", "stride", "long_side", "verify")

    @classmethod
    def from_json(cls, d: Any) -> DenseSection:
        """Parse the section, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, "clip.dense")
        files = _object(_field(d, "files", "clip.dense"), "clip.dense.files")
        if not files or not all(isinstance(v, str) for v in files.values()):
            raise _bad("clip.dense.files", "an object of precision -> file name", files)
        sizes = {}
        for key in ("stride", "long_side"):
            v = _field(d, key, "clip.dense")
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 4096:
                raise _bad(f"clip.dense.{key}", "an integer in [1, 4096]", v)
            sizes[key] = v
        return cls(
            files=dict(files),
            stride=sizes["stride"],
            long_side=sizes["long_side"],
            verify=None if d.get("verify") is None else _object(d["verify"], "clip.dense.verify"),
            other={k: v for k, v in d.items() if k not in cls._KEYS},
        )

    def file(self, precision: str) -> str:
        """The map encoder of ``precision``, else the bundle's other one (it only ranks
        candidates; the final choice is always the crop encoder's)."""
        return self.files.get(precision) or next(iter(self.files.values()))

    def to_json(self) -> dict[str, Any]:
        """The JSON section, then :attr:`other`."""
        out: dict[str, Any] = {"files": self.files, "stride": self.stride}
        out["long_side"] = self.long_side
        if self.verify is not None:
            out["verify"] = self.verify
        out.update(self.other)
        return out


@dataclass(frozen=True)
class ClipSection:
    """``bundle.json``'s ``clip``: the CLIP encoders of text prompts and how they were checked.

    Written by the exporter (its ``export_clip``) and by text calibration
    (``text_threshold``); ``edge.clip`` loads the encoders from it. Parsed once, with
    :class:`BundleManifest`. Keys neither writes (a demo's ``training``, ...) are kept verbatim
    in :attr:`other`.

    Attributes:
        model: open_clip model name, e.g. ``ViT-B-32-quickgelu``.
        files: Tower (``image``, ``text``) -> precision -> file name.
        precisions: CLIP precisions present (``fp32``, ``int8``).
        default_precision: Precision used when the caller does not choose.
        model_kwargs: open_clip overrides it was built with (tiny test models).
        pretrained: Where the weights came from (tag or file, with its hash).
        embed_dim: Embedding size (>= 1).
        logit_scale: CLIP's similarity scale (softmax probabilities).
        image: Image tower input facts (size, mean/std, resize; parsed by
            ``edge.clip.ClipPreprocess``).
        max_batch: Largest crop batch per image-session call (``image.max_batch``).
        text: Text tower I/O facts.
        tokenizer: Tokenizer files and settings (``bpe`` names the merges file).
        opset: ONNX opset of the encoders.
        quantization: The int8 recipe (``None`` without int8 encoders).
        verify: ONNX vs torch agreement of each tower and precision.
        exporter: Versions of the exporting tools.
        dense: The dense image encoder of a conv tower, ``None`` for ViTs.
        text_threshold: The measured minimum similarity of a text prompt's best mask
            (``None``: not calibrated, the best mask always wins).
        text_threshold_calibration: How it was measured.
        other: Any further keys, verbatim, after the ones above.
    """

    model: str
    files: dict[str, dict[str, str]]
    precisions: tuple[str, ...]
    default_precision: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: Any = None
    embed_dim: int = 1
    logit_scale: float = DEFAULT_LOGIT_SCALE
    image: dict[str, Any] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    opset: int = 0
    quantization: dict[str, Any] | None = None
    verify: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    dense: DenseSection | None = None
    text_threshold: float | None = None
    text_threshold_calibration: dict[str, Any] | None = None
    other: dict[str, Any] = field(default_factory=dict)

    _KEYS = (
        "model",
        "model_kwargs",
        "pretrained",
        "embed_dim",
        "logit_scale",
        "image",
        "text",
        "tokenizer",
        "files",
        "precisions",
        "default_precision",
        "opset",
        "quantization",
        "verify",
        "exporter",
        "dense",
        "text_threshold",
        "text_threshold_calibration",
    )

    @classmethod
    def from_json(cls, d: Any) -> ClipSection:
        """Parse the section, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, "clip")
        files = _object(_field(d, "files", "clip"), "clip.files")
        for tower, row in files.items():
            _object(row, f"clip.files.{tower}")
        precisions = _field(d, "precisions", "clip")
        if not isinstance(precisions, list) or not precisions:
            raise _bad("clip.precisions", "a non-empty list", precisions)
        unknown = [p for p in precisions if p not in CLIP_PRECISIONS]
        if unknown:
            raise _bad("clip.precisions", f"a list of {list(CLIP_PRECISIONS)}", precisions)
        default = _strict_str(d.get("default_precision", precisions[0]), "clip.default_precision")
        if default not in precisions:
            raise _bad("clip.default_precision", f"one of {precisions}", default)
        image = _object(_field(d, "image", "clip"), "clip.image")
        max_batch = image.get("max_batch", MAX_CLIP_BATCH)
        if (
            isinstance(max_batch, bool)
            or not isinstance(max_batch, int)
            or not 1 <= max_batch <= MAX_CLIP_BATCH_LIMIT
        ):
            raise _bad(
                "clip.image.max_batch", f"an integer in [1, {MAX_CLIP_BATCH_LIMIT}]", max_batch
            )
        tokenizer = _object(_field(d, "tokenizer", "clip"), "clip.tokenizer")
        if not tokenizer.get("bpe") or not isinstance(tokenizer["bpe"], str):
            raise _bad(
                "clip.tokenizer.bpe",
                "the merges file's name (re-export the bundle)",
                tokenizer.get("bpe"),
            )
        scale = d.get("logit_scale", DEFAULT_LOGIT_SCALE)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise _bad("clip.logit_scale", "a positive number", scale)
        threshold = d.get("text_threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not -1 <= threshold <= 1
        ):
            raise _bad("clip.text_threshold", "a number in [-1, 1]", threshold)
        quant = d.get("quantization")
        calibration = d.get("text_threshold_calibration")
        return cls(
            model=_strict_str(_field(d, "model", "clip"), "clip.model"),
            files=files,
            precisions=tuple(str(p) for p in precisions),
            default_precision=default,
            model_kwargs=_object(d.get("model_kwargs", {}), "clip.model_kwargs"),
            pretrained=d.get("pretrained"),
            embed_dim=_strict_int(_field(d, "embed_dim", "clip"), "clip.embed_dim", lo=1),
            logit_scale=float(scale),
            image=image,
            text=_object(d.get("text", {}), "clip.text"),
            tokenizer=tokenizer,
            opset=_strict_int(d.get("opset", 0), "clip.opset", lo=0),
            quantization=None if quant is None else _object(quant, "clip.quantization"),
            verify=_object(d.get("verify", {}), "clip.verify"),
            exporter=_object(d.get("exporter", {}), "clip.exporter"),
            dense=None if d.get("dense") is None else DenseSection.from_json(d["dense"]),
            text_threshold=None if threshold is None else float(threshold),
            text_threshold_calibration=(
                None
                if calibration is None
                else _object(calibration, "clip.text_threshold_calibration")
            ),
            other={k: v for k, v in d.items() if k not in cls._KEYS},
        )

    @property
    def max_batch(self) -> int:
        """Largest crop batch per image-session call (``clip.image.max_batch``)."""
        return int(self.image.get("max_batch", MAX_CLIP_BATCH))

    def file(self, tower: str, precision: str) -> str:
        """The ``tower`` (``image``/``text``) encoder's file of ``precision``.

        Raises:
            BundleError: The bundle has no such encoder.
        """
        name = self.files.get(tower, {}).get(precision)
        if not isinstance(name, str):
            raise BundleError(f"bundle.json: clip.files has no {precision} {tower} encoder")
        return name

    def to_json(self) -> dict[str, Any]:
        """The JSON section: the exporter's keys in its order, then :attr:`other`."""
        out = {k: getattr(self, k) for k in self._KEYS}
        out["precisions"] = list(self.precisions)
        # Optional keys are absent, as before they existed (ViT towers: no dense map).
        for key in ("dense", "text_threshold", "text_threshold_calibration"):
            if out[key] is None:
                del out[key]
        if self.dense is not None:
            out["dense"] = self.dense.to_json()
        out.update(self.other)
        return out


YOLOE_FAMILIES = ("v8", "11", "26")
YOLOE_OUTPUTS = ("output0", "embeddings", "protos")


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, "a list of strings", value)
    return tuple(value)


@dataclass(frozen=True)
class TextTowerSection:
    """``bundle.json``'s ``yoloe.text``: the YOLOE text encoder (words -> raw embeddings).

    Attributes:
        model: Ultralytics' name of the text model (``mobileclip:blt``, ``mobileclip2:b``).
        files: Precision -> ONNX file (input ``tokens`` (T, 77), output ``embeddings``
            (T, D), L2-normalised in the graph).
        precisions: Precisions present (``fp32``, ``int8``).
        default_precision: Precision used when the caller does not choose.
        tokenizer: The tokenizer section, as ``clip.tokenizer`` (``bpe`` file, ids).
        source: The file it was exported from (name, sha256).
        verify: ONNX vs torch agreement per precision (cosines).
    """

    model: str
    files: dict[str, str]
    precisions: tuple[str, ...]
    default_precision: str
    tokenizer: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any) -> TextTowerSection:
        """Parse the section, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, "yoloe.text")
        files = _object(_field(d, "files", "yoloe.text"), "yoloe.text.files")
        precisions = _str_list(_field(d, "precisions", "yoloe.text"), "yoloe.text.precisions")
        if not precisions or any(p not in files for p in precisions):
            raise _bad(
                "yoloe.text.precisions", f"a non-empty subset of {sorted(files)}", precisions
            )
        default = _strict_str(
            d.get("default_precision", precisions[0]), "yoloe.text.default_precision"
        )
        if default not in precisions:
            raise _bad("yoloe.text.default_precision", f"one of {list(precisions)}", default)
        return cls(
            model=_strict_str(_field(d, "model", "yoloe.text"), "yoloe.text.model"),
            files={str(k): _strict_str(v, f"yoloe.text.files.{k}") for k, v in files.items()},
            precisions=precisions,
            default_precision=default,
            tokenizer=_object(_field(d, "tokenizer", "yoloe.text"), "yoloe.text.tokenizer"),
            source=_object(d.get("source", {}), "yoloe.text.source"),
            verify=_object(d.get("verify", {}), "yoloe.text.verify"),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON section."""
        return {
            "model": self.model,
            "files": dict(self.files),
            "precisions": list(self.precisions),
            "default_precision": self.default_precision,
            "tokenizer": dict(self.tokenizer),
            "source": dict(self.source),
            "verify": dict(self.verify),
        }


@dataclass(frozen=True)
class YoloeSection:
    """``bundle.json``'s ``yoloe``: an open-vocabulary YOLOE detector (``edge.yoloe``).

    Its presence makes the bundle a YOLOE bundle: the detector has the outputs
    :data:`YOLOE_OUTPUTS` and the words are scored in numpy against :attr:`head`.

    Attributes:
        family: ``v8``, ``11`` or ``26`` (ultralytics' YOLOE -seg families).
        end2end: Decode with the one-to-one head's top-k (YOLOE-26), not NMS.
        box_format: ``xywh`` (v8/11) or ``xyxy`` (end-to-end) rows of ``output0``.
        embed_dim: D, the prompt embedding size.
        strides: The head's strides (anchors per scale follow from the input size).
        head: The text adapter and folded contrastive heads (``.npz``, ``YoloeHead``).
        vocabulary: The default vocabulary's words (may be empty).
        vocabulary_file: Their raw (K, D) float32 embeddings (``.npy``), ``None`` without.
        text: The text tower (``None``: words need caller-given embeddings).
    """

    family: str
    end2end: bool
    box_format: str
    embed_dim: int
    strides: tuple[int, ...]
    head: str
    vocabulary: tuple[str, ...] = ()
    vocabulary_file: str | None = None
    text: TextTowerSection | None = None

    @classmethod
    def from_json(cls, d: Any) -> YoloeSection:
        """Parse the section, raising :class:`BundleError` naming a malformed field."""
        d = _object(d, "yoloe")
        family = _strict_str(_field(d, "family", "yoloe"), "yoloe.family")
        if family not in YOLOE_FAMILIES:
            raise _bad("yoloe.family", f"one of {list(YOLOE_FAMILIES)}", family)
        end2end = _field(d, "end2end", "yoloe")
        if not isinstance(end2end, bool):
            raise _bad("yoloe.end2end", "true or false", end2end)
        box_format = _strict_str(_field(d, "box_format", "yoloe"), "yoloe.box_format")
        if box_format not in ("xywh", "xyxy"):
            raise _bad("yoloe.box_format", "'xywh' or 'xyxy'", box_format)
        strides = _field(d, "strides", "yoloe")
        if not isinstance(strides, list) or not strides:
            raise _bad("yoloe.strides", "a non-empty list of integers", strides)
        vocab = d.get("vocabulary") or {}
        vocab = _object(vocab, "yoloe.vocabulary")
        names = _str_list(vocab.get("names", []), "yoloe.vocabulary.names")
        vfile = vocab.get("file")
        if names and vfile is None:
            raise BundleError("bundle.json is malformed: yoloe.vocabulary.file is missing")
        text = d.get("text")
        return cls(
            family=family,
            end2end=end2end,
            box_format=box_format,
            embed_dim=_strict_int(_field(d, "embed_dim", "yoloe"), "yoloe.embed_dim", lo=1),
            strides=tuple(_strict_int(s, "yoloe.strides[]", lo=1) for s in strides),
            head=_strict_str(_field(d, "head", "yoloe"), "yoloe.head"),
            vocabulary=names,
            vocabulary_file=None if vfile is None else _strict_str(vfile, "yoloe.vocabulary.file"),
            text=None if text is None else TextTowerSection.from_json(text),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON section."""
        out: dict[str, Any] = {
            "family": self.family,
            "end2end": self.end2end,
            "box_format": self.box_format,
            "embed_dim": self.embed_dim,
            "strides": list(self.strides),
            "head": self.head,
            "vocabulary": {"names": list(self.vocabulary), "file": self.vocabulary_file},
        }
        if self.text is not None:
            out["text"] = self.text.to_json()
        return out


@dataclass(frozen=True)
class BundleManifest:
    """Parsed ``bundle.json``.

    Attributes:
        schema_version: Manifest schema version (this runtime reads version 1).
        name: Human-readable bundle name.
        input: Detector input facts.
        thresholds: Default conf / iou / max_det.
        files: File name -> integrity facts, for every file of the bundle.
        precisions: Detector precisions present (``fp32``, ``int8``).
        default_precision: Precision used when the caller does not choose.
        opset: ONNX opset of the detector.
        num_coefficients: Mask coefficients per detection (32 for YOLOv8-seg).
        source: Facts about the source weights (``name``, ``sha256``, ``architecture``).
        exporter: Versions of the exporting tools.
        created: ISO-8601 creation time.
        extra: Any further sections, kept verbatim.
        memory: Measured peak memory per precision (``None`` for bundles exported before
            it was measured).
        detector_gop: Giga-operations of one detector pass at ``input.imgsz`` (``None``:
            not counted).
        quantization: The int8 detector's recipe and check (``None``: not quantized).
        clip: The CLIP encoders of text prompts (``None``: no text support).
        yoloe: The open-vocabulary head, vocabulary and text tower of a YOLOE bundle
            (``None``: a FastSAM bundle).
    """

    name: str
    input: InputSpec
    files: dict[str, FileEntry]
    precisions: tuple[str, ...]
    default_precision: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    opset: int = 0
    num_coefficients: int = 32
    source: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    memory: MemoryProfile | None = None
    detector_gop: float | None = None
    quantization: QuantSection | None = None
    clip: ClipSection | None = None
    yoloe: YoloeSection | None = None

    @property
    def has_text(self) -> bool:
        """Whether the bundle carries CLIP encoders (text prompts)."""
        return self.clip is not None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleManifest:
        """Parse a manifest dictionary, raising :class:`BundleError` on a malformed one."""
        try:
            version = _strict_int(_field(d, "schema_version", "bundle.json"), "schema_version")
            if version != SCHEMA_VERSION:
                raise BundleError(
                    f"bundle.json schema_version: this runtime reads {SCHEMA_VERSION}, "
                    f"got {version}"
                )
            th = d.get("thresholds", {})
            known = {
                "schema_version",
                "name",
                "input",
                "thresholds",
                "files",
                "precisions",
                "default_precision",
                "opset",
                "num_coefficients",
                "source",
                "exporter",
                "created",
                "memory",
                "detector_gop",
                "quantization",
                "clip",
                "yoloe",
            }
            precisions = d["precisions"]
            if not isinstance(precisions, list) or not precisions:
                raise BundleError(
                    f"bundle.json precisions: expected a non-empty list, got {precisions!r}"
                )
            unknown = [p for p in precisions if p not in DETECTOR_FILES]
            if unknown:
                raise BundleError(
                    f"bundle.json precisions: unknown {unknown}; "
                    f"this runtime knows {list(DETECTOR_FILES)}"
                )
            if d["default_precision"] not in precisions:
                raise BundleError(
                    f"bundle.json default_precision: {d['default_precision']!r} "
                    f"is not in {precisions}"
                )
            files = _field(d, "files", "bundle.json")
            if not isinstance(files, dict):
                raise _bad("files", "an object of file name -> facts", files)
            manifest = cls(
                schema_version=version,
                name=_strict_str(d["name"], "name"),
                input=InputSpec.from_dict(d["input"]),
                thresholds=Thresholds(
                    conf=_strict_number(
                        _field(th, "conf", "thresholds", DEFAULT_CONF), "thresholds.conf"
                    ),
                    iou=_strict_number(
                        _field(th, "iou", "thresholds", DEFAULT_IOU), "thresholds.iou"
                    ),
                    max_det=_strict_int(
                        _field(th, "max_det", "thresholds", DEFAULT_MAX_DET),
                        "thresholds.max_det",
                        lo=1,
                    ),
                ),
                files={k: FileEntry.from_dict(k, v) for k, v in files.items()},
                precisions=tuple(d["precisions"]),
                default_precision=str(d["default_precision"]),
                opset=_strict_int(d.get("opset", 0), "opset", lo=0),
                num_coefficients=_strict_int(
                    d.get("num_coefficients", 32), "num_coefficients", lo=1
                ),
                source=dict(d.get("source", {})),
                exporter=dict(d.get("exporter", {})),
                created=str(d.get("created", "")),
                extra={k: v for k, v in d.items() if k not in known},
                memory=MemoryProfile.from_dict(d["memory"]) if d.get("memory") else None,
                quantization=(
                    None
                    if d.get("quantization") is None
                    else QuantSection.from_json(d["quantization"])
                ),
                clip=ClipSection.from_json(d["clip"]) if d.get("clip") else None,
                detector_gop=_optional_positive(d.get("detector_gop"), "detector_gop"),
                yoloe=None if d.get("yoloe") is None else YoloeSection.from_json(d["yoloe"]),
            )
            return manifest
        except BundleError:
            raise
        except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle.json is malformed: {type(exc).__name__}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Serialise to the JSON-able manifest dictionary."""
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "created": self.created,
            "input": {
                "dynamic": self.input.dynamic,
                "imgsz": list(self.input.imgsz),
                "stride": self.input.stride,
                "name": self.input.name,
            },
            "thresholds": asdict(self.thresholds),
            "precisions": list(self.precisions),
            "default_precision": self.default_precision,
            "opset": self.opset,
            "num_coefficients": self.num_coefficients,
            "files": {k: asdict(v) for k, v in sorted(self.files.items())},
            "source": self.source,
            "exporter": self.exporter,
        }
        if self.memory is not None:
            d["memory"] = self.memory.to_dict()
        if self.detector_gop is not None:
            d["detector_gop"] = self.detector_gop
        d.update(self.extra)
        if self.quantization is not None:
            d["quantization"] = self.quantization.to_json()
        if self.clip is not None:
            d["clip"] = self.clip.to_json()
        if self.yoloe is not None:
            d["yoloe"] = self.yoloe.to_json()
        return d

    def detector_file(self, precision: str) -> str:
        """File name of the detector for ``precision``, which must be present."""
        if precision not in self.precisions:
            raise BundleError(
                f"precision: {precision!r} is not in this bundle "
                f"(available: {list(self.precisions)})"
            )
        return DETECTOR_FILES[precision]


def read_manifest(bundle_dir: str | Path) -> BundleManifest:
    """Read and parse ``bundle_dir/bundle.json``.

    Raises:
        BundleError: The directory or manifest is missing or malformed.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        kind = describe_path_kind(bundle_dir) or "is a file"
        raise BundleError(f"bundle: {str(bundle_dir)!r} is not a directory ({kind})")
    path = bundle_dir / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"bundle: {str(path)!r} is missing; is this a fastsam-edge bundle?")
    check_regular_file(path, "bundle", BundleError)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle: cannot parse {str(path)!r}: {exc}") from exc
    except RecursionError:
        raise BundleError(f"bundle: cannot parse {str(path)!r}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BundleError(f"bundle: {str(path)!r} must hold a JSON object")
    return BundleManifest.from_dict(data)


def verify_file(bundle_dir: str | Path, manifest: BundleManifest, name: str) -> Path:
    """Check one bundle file against the manifest's size and sha256.

    Returns:
        The file's path.

    Raises:
        BundleError: Unknown, missing, truncated or modified file.
    """
    path = Path(bundle_dir) / name
    entry = manifest.files.get(name)
    if entry is None:
        raise BundleError(f"bundle: {name!r} is not listed in bundle.json")
    if not path.is_file():
        raise BundleError(f"bundle: file {str(path)!r} is missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise BundleError(
            f"bundle: {str(path)!r} has {size} bytes, bundle.json says {entry.bytes}"
        )
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise BundleError(
            f"bundle: sha256 mismatch for {str(path)!r}: {digest} != {entry.sha256} "
            "(corrupt copy?)"
        )
    return path
