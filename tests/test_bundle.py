"""Tests for the bundle manifest, file verification and session creation (no model needed)."""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import nullcontext as DoesNotRaise

import onnxruntime as ort
import pytest

from edge.bundle import (
    DETECTOR_FILES,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    BundleManifest,
    ClipSection,
    FileEntry,
    InputSpec,
    QuantSection,
    Thresholds,
    read_manifest,
    sha256_file,
    verify_file,
)
from edge.errors import BundleError
from edge.session import create_session, default_threads

PAYLOAD = b"not really an onnx model, but bytes with a known hash\n" * 3


def _manifest_dict(payload: bytes = PAYLOAD) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "name": "fastsam-s-demo",
        "created": "2025-01-01T00:00:00Z",
        "input": {"dynamic": True, "imgsz": [1024, 1024], "stride": 32, "name": "images"},
        "thresholds": {"conf": 0.4, "iou": 0.9, "max_det": 300},
        "precisions": ["fp32", "int8"],
        "default_precision": "fp32",
        "opset": 17,
        "num_coefficients": 32,
        "files": {
            "fastsam.fp32.onnx": {
                "sha256": hashlib.sha256(payload).hexdigest(),
                "bytes": len(payload),
                "role": "detector",
                "precision": "fp32",
            },
            "fastsam.int8.onnx": {
                "sha256": hashlib.sha256(b"int8").hexdigest(),
                "bytes": 4,
                "role": "detector",
                "precision": "int8",
            },
        },
        "source": {"name": "FastSAM-s.pt", "sha256": "ab" * 32, "architecture": "yolov8s-seg"},
        "exporter": {"ultralytics": "8.4.190", "onnx": "1.17"},
        "calibration": {"images": 64, "seed": 0},  # an extra section, kept verbatim
    }


# --------------------------------------------------------------------------------------------
# manifest parsing
# --------------------------------------------------------------------------------------------


def test_manifest_round_trip():
    d = _manifest_dict()
    m = BundleManifest.from_dict(d)
    assert m.name == "fastsam-s-demo"
    assert m.input == InputSpec(dynamic=True, imgsz=(1024, 1024), stride=32, name="images")
    assert m.thresholds == Thresholds(conf=0.4, iou=0.9, max_det=300)
    assert m.precisions == ("fp32", "int8")
    assert m.files["fastsam.fp32.onnx"] == FileEntry(
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        bytes=len(PAYLOAD),
        role="detector",
        precision="fp32",
    )
    assert m.extra == {"calibration": {"images": 64, "seed": 0}}
    out = m.to_dict()
    assert out == d
    # Through JSON text as well.
    again = BundleManifest.from_dict(json.loads(json.dumps(out)))
    assert again == m


def test_manifest_defaults_for_optional_keys():
    d = _manifest_dict()
    for key in (
        "thresholds",
        "opset",
        "num_coefficients",
        "source",
        "exporter",
        "created",
        "calibration",
    ):
        del d[key]
    del d["input"]["stride"], d["input"]["name"]
    m = BundleManifest.from_dict(d)
    assert m.thresholds == Thresholds()
    assert (m.thresholds.conf, m.thresholds.iou, m.thresholds.max_det) == (0.4, 0.9, 300)
    assert m.input.stride == 32 and m.input.name == "images"
    assert m.num_coefficients == 32 and m.opset == 0
    assert m.extra == {}


def _without(*path):
    d = _manifest_dict()
    node = d
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return d


def _with(value, *path):
    d = _manifest_dict()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


MALFORMED = [
    pytest.param(_without("schema_version"), "schema_version", id="no-schema_version"),
    pytest.param(_without("name"), "name", id="no-name"),
    pytest.param(_without("input"), "input", id="no-input"),
    pytest.param(_without("input", "imgsz"), "imgsz", id="no-imgsz"),
    pytest.param(_without("input", "dynamic"), "dynamic", id="no-dynamic"),
    pytest.param(_without("files"), "files", id="no-files"),
    pytest.param(_without("precisions"), "precisions", id="no-precisions"),
    pytest.param(_without("default_precision"), "default_precision", id="no-default_precision"),
    pytest.param(_with(2, "schema_version"), "schema_version", id="schema-2"),
    pytest.param(_with(0, "schema_version"), "schema_version", id="schema-0"),
    pytest.param(_with("one", "schema_version"), "malformed", id="schema-not-int"),
    pytest.param(_with("big", "input", "imgsz"), "malformed", id="imgsz-string"),
    pytest.param(_with("x", "input"), "malformed", id="input-not-object"),
    pytest.param(_with(5, "precisions"), "precisions", id="precisions-int"),
    pytest.param(_with(None, "source"), "malformed", id="source-null"),
    pytest.param(
        _with({"x": {"sha256": "0"}}, "files"), "malformed", id="file-entry-missing-keys"
    ),
    pytest.param(
        _with({"x": {"sha256": "0", "bytes": 1, "role": "r", "colour": "red"}}, "files"),
        "malformed",
        id="file-entry-unknown-key",
    ),
    pytest.param(_with("high", "thresholds", "conf"), "malformed", id="conf-not-number"),
    pytest.param([1, 2, 3], "malformed", id="list-not-object"),
    pytest.param("bundle", "malformed", id="string-not-object"),
]


# lenient types that used to be coerced silently (issue 11): each is a type error naming the field
LENIENT = [
    pytest.param(_with("false", "input", "dynamic"), "input.dynamic", id="dynamic-string"),
    pytest.param(_with(1, "input", "dynamic"), "input.dynamic", id="dynamic-int"),
    pytest.param(_with(0, "input", "stride"), "input.stride", id="stride-0"),
    pytest.param(_with(-32, "input", "stride"), "input.stride", id="stride-negative"),
    pytest.param(_with(32.0, "input", "stride"), "input.stride", id="stride-float"),
    pytest.param(_with([1024.5, 1024], "input", "imgsz"), "input.imgsz", id="imgsz-float"),
    pytest.param(_with([1024.0, 1024], "input", "imgsz"), "input.imgsz", id="imgsz-float-int"),
    pytest.param(_with(["1024", 1024], "input", "imgsz"), "input.imgsz", id="imgsz-string-item"),
    pytest.param(_with([True, 1024], "input", "imgsz"), "input.imgsz", id="imgsz-bool"),
    pytest.param(_with([0, 1024], "input", "imgsz"), "input.imgsz", id="imgsz-zero"),
    pytest.param(_with([1000, 1024], "input", "imgsz"), "multiples of", id="imgsz-not-stride"),
    pytest.param(_with([1024, 1024, 3], "input", "imgsz"), "input.imgsz", id="imgsz-three"),
    pytest.param(_with(7, "input", "name"), "input.name", id="input-name-int"),
    pytest.param(_with(2.7, "thresholds", "max_det"), "thresholds.max_det", id="max_det-float"),
    pytest.param(_with(True, "thresholds", "max_det"), "thresholds.max_det", id="max_det-bool"),
    pytest.param(_with(0, "thresholds", "max_det"), "thresholds.max_det", id="max_det-0"),
    pytest.param(_with("300", "thresholds", "max_det"), "thresholds.max_det", id="max_det-str"),
    pytest.param(_with(True, "thresholds", "conf"), "thresholds.conf", id="conf-bool"),
    pytest.param(_with(1.5, "thresholds", "iou"), "thresholds.iou", id="iou-above-1"),
    pytest.param(
        _with("13161994", "files", "fastsam.fp32.onnx", "bytes"),
        "files.fastsam.fp32.onnx.bytes",
        id="bytes-string",
    ),
    pytest.param(
        _with(True, "files", "fastsam.fp32.onnx", "bytes"),
        "files.fastsam.fp32.onnx.bytes",
        id="bytes-bool",
    ),
    pytest.param(
        _with(-1, "files", "fastsam.fp32.onnx", "bytes"),
        "files.fastsam.fp32.onnx.bytes",
        id="bytes-negative",
    ),
    pytest.param(
        _with("ABC", "files", "fastsam.fp32.onnx", "sha256"),
        "files.fastsam.fp32.onnx.sha256",
        id="sha256-not-hex",
    ),
    pytest.param(_with(3, "files", "fastsam.fp32.onnx", "role"), "role", id="role-int"),
    pytest.param(_with(True, "schema_version"), "schema_version", id="schema-bool"),
    pytest.param(_with(1.0, "schema_version"), "schema_version", id="schema-float"),
    pytest.param(_with(17.5, "opset"), "opset", id="opset-float"),
    pytest.param(_with("32", "num_coefficients"), "num_coefficients", id="coefficients-str"),
    pytest.param(_with(0, "num_coefficients"), "num_coefficients", id="coefficients-0"),
    pytest.param(_with(5, "name"), "name", id="name-int"),
]


@pytest.mark.parametrize(("d", "field"), LENIENT)
def test_manifest_refuses_lenient_types(d, field):
    with pytest.raises(BundleError) as excinfo:
        BundleManifest.from_dict(d)
    msg = str(excinfo.value)
    assert field in msg
    assert "malformed" in msg


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_read_manifest_deeply_nested_json(tmp_path, depth):
    (tmp_path / MANIFEST_NAME).write_text("[" * depth + "]" * depth)
    with pytest.raises(BundleError, match="nested too deeply|must hold a JSON object"):
        read_manifest(tmp_path)


def test_read_manifest_deeply_nested_inside_a_valid_object(tmp_path):
    d = _manifest_dict()
    text = json.dumps(d)[:-1] + ', "deep": ' + "[" * 50_000 + "]" * 50_000 + "}"
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(BundleError, match="nested too deeply"):
        read_manifest(tmp_path)


def test_read_manifest_names_what_the_path_is(tmp_path):
    import os

    os.mkfifo(tmp_path / MANIFEST_NAME)
    with pytest.raises(BundleError, match="is a FIFO"):
        read_manifest(tmp_path)  # and does not block opening the FIFO
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(BundleError, match="symlink loop"):
        read_manifest(loop)


@pytest.mark.parametrize(("d", "needle"), MALFORMED)
def test_manifest_from_dict_malformed(d, needle):
    with pytest.raises(BundleError) as excinfo:
        BundleManifest.from_dict(d)
    assert needle in str(excinfo.value)


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(_with([640], "input", "imgsz"), id="imgsz-one-side"),
        pytest.param(_with([0.4, 0.9], "thresholds"), id="thresholds-list"),
        pytest.param(_with([], "files"), id="files-list"),
        pytest.param(_with("fp32", "precisions"), id="precisions-string"),
    ],
)
def test_manifest_from_dict_malformed_escapes(d):
    with pytest.raises(BundleError, match="malformed|precisions"):
        BundleManifest.from_dict(d)


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(_with(["fp32", "fp16"], "precisions"), id="unknown-precision-listed"),
    ],
)
def test_manifest_unknown_precision_is_bundle_error(d):
    with pytest.raises(BundleError, match="fp16"):
        BundleManifest.from_dict(d).detector_file("fp16")


@pytest.mark.parametrize(
    ("precision", "expectation"),
    [
        pytest.param("fp32", DoesNotRaise(), id="fp32"),
        pytest.param("int8", DoesNotRaise(), id="int8"),
        pytest.param(
            "fp16", pytest.raises(BundleError, match=r"'fp16'.*'fp32', 'int8'"), id="fp16"
        ),
        pytest.param("FP32", pytest.raises(BundleError, match="FP32"), id="case-sensitive"),
        pytest.param("", pytest.raises(BundleError, match="precision"), id="empty"),
    ],
)
def test_detector_file(precision, expectation):
    m = BundleManifest.from_dict(_manifest_dict())
    with expectation:
        assert m.detector_file(precision) == DETECTOR_FILES[precision]


def test_detector_file_absent_precision():
    m = BundleManifest.from_dict(_with(["fp32"], "precisions"))
    with pytest.raises(BundleError, match="int8"):
        m.detector_file("int8")


# --------------------------------------------------------------------------------------------
# read_manifest
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param("{not json", "cannot parse", id="bad-json"),
        pytest.param("", "cannot parse", id="empty-file"),
        pytest.param("[1, 2]", "JSON object", id="json-list"),
        pytest.param('"bundle"', "JSON object", id="json-string"),
        pytest.param("null", "JSON object", id="json-null"),
        pytest.param(json.dumps(_with(9, "schema_version")), "schema_version", id="wrong-version"),
    ],
)
def test_read_manifest_errors(tmp_path, text, needle):
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(BundleError) as excinfo:
        read_manifest(tmp_path)
    assert needle in str(excinfo.value)


def test_read_manifest_invalid_utf8(tmp_path):
    (tmp_path / MANIFEST_NAME).write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(BundleError, match="cannot parse"):
        read_manifest(tmp_path)


def test_read_manifest_missing(tmp_path):
    with pytest.raises(BundleError, match="missing"):
        read_manifest(tmp_path)
    with pytest.raises(BundleError, match="not a directory"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        read_manifest(tmp_path / "file")


def test_read_manifest_ok(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(_manifest_dict()))
    assert read_manifest(str(tmp_path)) == BundleManifest.from_dict(_manifest_dict())


# --------------------------------------------------------------------------------------------
# verify_file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "fastsam.fp32.onnx").write_bytes(PAYLOAD)
    (tmp_path / "extra.bin").write_bytes(b"unlisted")
    return tmp_path, BundleManifest.from_dict(_manifest_dict())


def test_verify_file_ok(bundle):
    root, m = bundle
    assert verify_file(root, m, "fastsam.fp32.onnx") == root / "fastsam.fp32.onnx"
    assert sha256_file(root / "fastsam.fp32.onnx", chunk=7) == hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        pytest.param(PAYLOAD[:-1], "fastsam.fp32.onnx", "bytes", id="truncated"),
        pytest.param(PAYLOAD + b"x", "fastsam.fp32.onnx", "bytes", id="grown"),
        pytest.param(PAYLOAD[:-1] + b"?", "fastsam.fp32.onnx", "sha256", id="same-size-modified"),
        pytest.param(None, "fastsam.int8.onnx", "missing", id="missing"),
        pytest.param(PAYLOAD, "extra.bin", "not listed", id="unlisted"),
    ],
)
def test_verify_file_errors(bundle, content, name, needle):
    root, m = bundle
    if content is not None and name != "extra.bin":
        (root / name).write_bytes(content)
    with pytest.raises(BundleError) as excinfo:
        verify_file(root, m, name)
    msg = str(excinfo.value)
    assert needle in msg
    assert name in msg
    if name != "extra.bin":  # listed files are named by their full path
        assert str(root / name) in msg


def test_manifest_is_not_mutated_by_parsing():
    d = _manifest_dict()
    snapshot = copy.deepcopy(d)
    BundleManifest.from_dict(d)
    assert d == snapshot


# --------------------------------------------------------------------------------------------
# create_session: argument checks happen before any model is loaded
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        pytest.param({"threads": 0}, pytest.raises(ValueError, match="threads"), id="threads-0"),
        pytest.param(
            {"threads": -2}, pytest.raises(ValueError, match="threads"), id="threads-negative"
        ),
        pytest.param(
            {"threads": 1.5}, pytest.raises(ValueError, match="threads"), id="threads-float"
        ),
        pytest.param(
            {"threads": "2"}, pytest.raises(ValueError, match="threads"), id="threads-str"
        ),
        pytest.param(
            {"providers": ["NoSuchExecutionProvider"]},
            pytest.raises(ValueError, match="NoSuchExecutionProvider.*CPUExecutionProvider"),
            id="unknown-provider",
        ),
        pytest.param(
            {"providers": ("CPUExecutionProvider", "Bogus")},
            pytest.raises(ValueError, match="Bogus"),
            id="one-unknown-provider",
        ),
        pytest.param(
            {"optimization": "max"},
            pytest.raises(ValueError, match="optimization"),
            id="optimization",
        ),
        # Valid arguments: only now is the (missing) model touched -> BundleError.
        pytest.param(
            {"threads": 1}, pytest.raises(BundleError, match="cannot load"), id="valid-args"
        ),
    ],
)
def test_create_session_argument_errors(tmp_path, kwargs, expectation):
    missing = tmp_path / "no-model.onnx"
    with expectation as excinfo:
        create_session(missing, **kwargs)
    assert not missing.exists()
    if excinfo is not None and excinfo.type is BundleError:
        assert str(missing) in str(excinfo.value)


def test_create_session_unknown_provider_lists_all_available(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        create_session(tmp_path / "m.onnx", providers=["TensorrtExecutionProviderX"])
    for provider in ort.get_available_providers():
        assert provider in str(excinfo.value)


@pytest.mark.parametrize(("transient", "pattern"), [(False, True), (True, False)])
def test_create_session_transient(transient, pattern):
    """transient=True: no arena, no memory pattern; run_transient gives the same output."""
    import numpy as np

    from edge.onnx_bytes import matmul_model
    from edge.session import run_transient

    sess = create_session(matmul_model(8, "fp32"), threads=1, transient=transient)
    opts = sess.get_session_options()
    assert opts.enable_cpu_mem_arena is pattern and opts.enable_mem_pattern is pattern
    feed = {"A": np.arange(64, dtype=np.float32).reshape(8, 8)}
    np.testing.assert_array_equal(run_transient(sess, feed)[0], sess.run(None, feed)[0])


def test_release_memory_returns_freed_heap_pages():
    """A freed heap block glibc keeps resident is given back (RSS drops)."""
    import edge.session as es

    if es._TRIM is None:
        pytest.skip("not glibc")
    import ctypes

    def rss_kib() -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 << 20
    blocks = [libc.malloc(1 << 16) for _ in range(size >> 16)]  # heap blocks, not mappings
    for b in blocks:
        ctypes.memset(b, 1, 1 << 16)
    keep = libc.malloc(1 << 16)  # a live block above them: the heap cannot shrink from its top
    for b in blocks:
        libc.free(b)
    before = rss_kib()
    assert es.release_memory() is True
    assert before - rss_kib() > (size >> 10) // 2
    libc.free(keep)


@pytest.mark.parametrize("content", [b"", b"garbage, not protobuf" * 10])
def test_create_session_corrupt_model_is_bundle_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(BundleError, match="bad.onnx"):
        create_session(path, threads=1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [("3", 3), ("1", 1), ("0", None), ("", None), ("abc", None), ("-2", None)],
)
def test_default_threads(monkeypatch, env, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert default_threads() == (expected if expected is not None else 6)


# --------------------------------------------------------------------------------------------
# typed sections: quantization and clip
# --------------------------------------------------------------------------------------------


def test_demo_bundle_sections_round_trip(demo_bundle):
    """The demo bundle's sections parse into the typed ones and back to the same JSON."""
    raw = json.loads((demo_bundle / "bundle.json").read_text(encoding="utf-8"))
    m = read_manifest(demo_bundle)
    assert m.quantization is not None and m.clip is not None
    assert m.quantization.to_json() == raw["quantization"]
    assert m.clip.to_json() == raw["clip"]
    assert m.quantization.ok == (raw["quantization"]["status"] == "ok")
    assert m.clip.precisions == tuple(raw["clip"]["precisions"])
    assert m.clip.text_threshold == raw["clip"]["text_threshold"]  # calibration's key, typed
    assert "clip" not in m.extra and "quantization" not in m.extra  # parsed once, typed
    assert m.to_dict()["clip"] == raw["clip"]  # the manifest itself is untouched


def test_quant_section_json_order_and_optional_keys():
    q = QuantSection(
        recipe={"format": "QDQ", "float_nodes": 7},
        status="refused: agreement 0.900 < 0.95",
        calibration_source="scenes",
        verify={"kernels": "reference"},
        verify_host={"kernels": "host"},
        host_differs=True,
    )
    d = q.to_json()
    assert list(d) == [
        "format", "float_nodes", "calibration_source", "verify", "verify_host", "host_differs",
        "status",
    ]  # fmt: skip
    assert QuantSection.from_json(d) == q and not q.ok
    assert "host_differs" not in QuantSection(recipe={}, status="ok").to_json()
    assert QuantSection.from_json({"format": "QDQ"}).to_json() == {"format": "QDQ"}


def _plan_section() -> QuantSection:
    from edge.bundle import FloatBlock, HeldOut, Int8Plan, Int8Target, PlanTrial

    fixed = PlanTrial("fixed", "minmax", (), 0.94, 0.96, 0.03, 2.4, False, "host")
    screened = PlanTrial("entropy", "entropy", (), 0.41, 0.5, 0.3, None, False, "host", 4)
    plan = PlanTrial(
        "fixed + float /model.22/proto", "minmax", ("/model.22/proto",), 0.975, 0.98, 0.0, 2.1,
        True, "host",
    )  # fmt: skip
    return QuantSection(
        recipe={"format": "QDQ", "calibration": "minmax", "float_blocks": ["/model.22/proto"]},
        status="ok",
        calibration_source="built-in scenes",
        verify={"kernels": "reference", "held_out": True, "images": 8,
                "mean_iou_fp32_to_int8": 0.975, "mean_iou_int8_to_fp32": 0.98,
                "recall_loss": 0.0, "recall_basis": "ground truth", "speedup": 2.1},
        held_out=HeldOut(8, "built-in scenes: every 4th image, not calibrated on", 24,
                         "ground truth"),
        plan=Int8Plan(
            "search", Int8Target(0.97, 0.01, 1.3), plan.name, True,
            (FloatBlock("/model.22/proto", 12, "sensitivity: +0.03", 3.5),),
            (fixed, screened, plan),
            {"/model.22/proto": 0.03, "/model.0": -0.001}, {"bias correction": "not tried"},
        ),
    )  # fmt: skip


def test_quant_section_plan_round_trip():
    q = _plan_section()
    d = json.loads(json.dumps(q.to_json()))  # through JSON text, as bundle.json holds it
    assert QuantSection.from_json(d) == q
    assert list(d)[-5:] == ["calibration_source", "held_out", "verify", "plan", "status"]
    assert d["plan"]["float_blocks"][0] == {
        "block": "/model.22/proto", "nodes": 12, "reason": "sensitivity: +0.03",
        "speed_cost_ms": 3.5,
    }  # fmt: skip
    assert d["plan"]["tried"][0]["float_blocks"] == [] and d["held_out"]["images"] == 8
    assert q.plan.tried[0].agreement == 0.94
    # a screened-out candidate records how many images it was measured on; full ones omit it
    assert d["plan"]["tried"][1]["images"] == 4 and "images" not in d["plan"]["tried"][0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["held_out"].update(images=0), "quantization.held_out.images"),
        (lambda d: d["held_out"].pop("source"), "quantization.held_out.source"),
        (lambda d: d["plan"].update(target=1), "quantization.plan.target"),
        (lambda d: d["plan"]["target"].update(min_iou=2), "quantization.plan.target.min_iou"),
        (lambda d: d["plan"].update(tried={}), "quantization.plan.tried"),
        (lambda d: d["plan"]["tried"][1].update(float_blocks="x"),
         r"quantization.plan.tried\[1\].float_blocks"),
        (lambda d: d["plan"]["tried"][1].update(images=0), r"quantization.plan.tried\[1\].images"),
        (lambda d: d["plan"]["tried"][1].update(images=2.5),
         r"quantization.plan.tried\[1\].images"),
        (lambda d: d["plan"]["float_blocks"][0].update(nodes=-1),
         r"quantization.plan.float_blocks\[0\].nodes"),
        (lambda d: d["plan"]["sensitivity"].update(x="high"), "quantization.plan.sensitivity.x"),
        (lambda d: d["plan"].update(speed_floor="no"), "quantization.plan.speed_floor"),
    ],
)  # fmt: skip
def test_quant_section_plan_malformed(change, field):
    d = _plan_section().to_json()
    change(d)
    with pytest.raises(BundleError, match=f"malformed: {field}"):
        QuantSection.from_json(d)


def test_info_shows_the_held_out_check_and_the_plan(demo_bundle, tmp_path, capsys):
    import shutil

    from edge.cli import main

    b = tmp_path / "b"
    shutil.copytree(demo_bundle, b)
    raw = json.loads((b / MANIFEST_NAME).read_text(encoding="utf-8"))
    raw["quantization"] = _plan_section().to_json()
    (b / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    assert main(["info", "--bundle", str(b)]) == 0
    out = capsys.readouterr().out
    assert (
        "int8 check:  reference, held-out, 8 images: mean mask IoU 0.975 / 0.980, recall loss "
        "0.0 pt (ground truth), 2.10x fp32 on the export host" in out
    )
    assert (
        "int8 plan:   search: fixed + float /model.22/proto (meets mean IoU >= 0.97 both ways, "
        "recall loss <= 1.0 pt, >= 1.3x fp32; 3 candidates tried, 1 screened out on a few images)"
        in out
    )
    assert "int8 float:  /model.22/proto (12 nodes, +3.5 ms): sensitivity: +0.03" in out
    assert "in-sample" not in out
    main(["info", "--bundle", str(demo_bundle)])  # an old bundle: its check was in-sample
    assert "int8 check:  reference, in-sample, 24 calibration images (old bundle)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ([], "quantization"),
        ({"status": 3}, "quantization.status"),
        ({"verify": "yes"}, "quantization.verify"),
    ],
)
def test_quant_section_malformed(section, field):
    with pytest.raises(BundleError, match=f"malformed: {field}:"):
        QuantSection.from_json(section)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": 3}, "clip.model"),
        ({"files": []}, "clip.files"),
        ({"files": {"image": "a.onnx"}}, "clip.files.image"),
        ({"precisions": []}, "clip.precisions"),
        ({"embed_dim": -1}, "clip.embed_dim"),
        ({"image": None}, "clip.image"),
        ({"dense": [1]}, "clip.dense"),
    ],
)
def test_clip_section_malformed(demo_bundle, change, field):
    raw = json.loads((demo_bundle / "bundle.json").read_text(encoding="utf-8"))["clip"]
    with pytest.raises(BundleError, match=f"malformed: {field}:"):
        ClipSection.from_json({**raw, **change})


def test_clip_section_dense_round_trip(demo_bundle):
    raw = json.loads((demo_bundle / "bundle.json").read_text(encoding="utf-8"))["clip"]
    assert "dense" not in ClipSection.from_json(raw).to_json()  # a ViT: no key, as before
    dense = {"files": {"fp32": "clip-dense.fp32.onnx"}, "stride": 32, "long_side": 320}
    section = ClipSection.from_json({**raw, "dense": dense})
    assert section.dense is not None and section.to_json()["dense"] == dense
    assert (section.dense.stride, section.dense.long_side, section.dense.file("int8")) == (
        32,
        320,
        "clip-dense.fp32.onnx",
    )
    assert "dense" not in section.other


def test_manifest_without_sections():
    m = BundleManifest.from_dict(_manifest_dict())
    assert m.clip is None and m.quantization is None
