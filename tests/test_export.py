"""fastsam-export: bundle contents, manifest facts, bad inputs and atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.export
pytest.importorskip("ultralytics")

from edge.bundle import read_manifest, sha256_file, verify_file  # noqa: E402
from export.common import ExportError  # noqa: E402
from export.fastsam import export_bundle, parse_imgsz  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.archs import make_checkpoint

    return make_checkpoint("fastsam-n", tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("640", (640, 640)),
        (640, (640, 640)),
        ("640x480", (480, 640)),
        ("1280x720", (736, 1280)),  # 720 rounds up to a stride multiple, as the reference
        ("1024", (1024, 1024)),
        ((480, 640), (480, 640)),
    ],
)
def test_parse_imgsz(value: object, expected: tuple[int, int]) -> None:
    assert parse_imgsz(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["abc", "640x", "0", "-32", "640x480x3", "x480"])
def test_parse_imgsz_rejects(value: str) -> None:
    with pytest.raises(ExportError, match="--imgsz"):
        parse_imgsz(value)


def test_cli_exports_bundle(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.cli",
            str(checkpoint),
            "--out",
            str(out),
            "--imgsz",
            "640x480",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "input shape: H=480 W=640" in proc.stdout
    m = read_manifest(out)
    assert m.input.imgsz == (480, 640) and not m.input.dynamic
    assert (m.thresholds.conf, m.thresholds.iou, m.thresholds.max_det) == (0.4, 0.9, 300)
    assert m.precisions == ("fp32",)
    assert m.source["sha256"] == sha256_file(checkpoint)
    assert m.source["weights"] == "tiny.pt"
    assert m.opset >= 11
    for key in ("torch", "ultralytics", "onnx", "onnxruntime"):
        assert m.exporter[key] != "not installed"
    assert set(os.listdir(out)) == {"bundle.json", "fastsam.fp32.onnx"}
    verify_file(out, m, "fastsam.fp32.onnx")
    # no temporary directories left next to the bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_dynamic_export_manifest(checkpoint: Path, tmp_path: Path) -> None:
    out = export_bundle(
        checkpoint, tmp_path / "dyn", imgsz=1024, dynamic=True, int8=False, measure_memory=False
    )
    m = read_manifest(out)
    assert m.input.dynamic and m.input.imgsz == (1024, 1024)
    import onnxruntime as ort

    shape = ort.InferenceSession(str(out / "fastsam.fp32.onnx")).get_inputs()[0].shape
    assert not isinstance(shape[2], int) and not isinstance(shape[3], int)


def test_reexport_replaces_bundle_atomically(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    export_bundle(checkpoint, out, imgsz=320, int8=False, measure_memory=False)
    export_bundle(checkpoint, out, imgsz=256, int8=False, measure_memory=False)
    assert read_manifest(out).input.imgsz == (256, 256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="nope.pt.*does not exist"):
        export_bundle(tmp_path / "nope.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_weights(tmp_path: Path) -> None:
    bad = _write(tmp_path / "corrupt.pt", b"this is not a checkpoint" * 10)
    with pytest.raises(ExportError, match="corrupt.pt.*not a readable torch checkpoint"):
        export_bundle(bad, tmp_path / "out", measure_memory=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt"]


def test_detection_checkpoint_rejected(tmp_path: Path) -> None:
    import torch
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = yaml_model_load("yolov8n.yaml")
    cfg["nc"] = 1
    path = tmp_path / "det.pt"
    torch.save({"model": DetectionModel(cfg, nc=1, verbose=False)}, path)
    with pytest.raises(ExportError, match="det.pt.*not a segmentation model"):
        export_bundle(path, tmp_path / "out", measure_memory=False)


def test_multiclass_checkpoint_rejected(tmp_path: Path) -> None:
    import torch
    from ultralytics.nn.tasks import SegmentationModel, yaml_model_load

    cfg = yaml_model_load("yolov8n-seg.yaml")
    cfg["nc"] = 80
    path = tmp_path / "coco.pt"
    torch.save({"model": SegmentationModel(cfg, nc=80, verbose=False)}, path)
    with pytest.raises(ExportError, match="coco.pt.*nc=80"):
        export_bundle(path, tmp_path / "out", measure_memory=False)


def test_unwritable_output(checkpoint: Path, tmp_path: Path) -> None:
    blocker = _write(tmp_path / "file", b"x")
    with pytest.raises(ExportError, match="--out"):
        export_bundle(checkpoint, blocker / "bundle", int8=False, measure_memory=False)


def test_refuses_to_replace_non_bundle(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    _write(out / "thesis.txt", b"do not delete")
    with pytest.raises(ExportError, match="not a bundle"):
        export_bundle(checkpoint, out, imgsz=256, int8=False, measure_memory=False)
    assert (out / "thesis.txt").read_bytes() == b"do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_failed_step_leaves_no_partial_bundle(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.fastsam as fastsam

    def boom(*_args: object) -> None:
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(fastsam, "write_manifest", boom)  # the last step before publishing
    with pytest.raises(RuntimeError, match="simulated"):
        export_bundle(checkpoint, tmp_path / "out", imgsz=256, int8=False, measure_memory=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_error_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.cli",
            str(tmp_path / "missing.pt"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "missing.pt" in proc.stderr and "Traceback" not in proc.stderr


def test_manifest_is_json(checkpoint: Path, tmp_path: Path) -> None:
    out = export_bundle(checkpoint, tmp_path / "j", imgsz=256, int8=False, measure_memory=False)
    doc = json.loads((out / "bundle.json").read_text())
    assert doc["schema_version"] == 1
    assert doc["files"]["fastsam.fp32.onnx"]["sha256"] == sha256_file(out / "fastsam.fp32.onnx")


def test_int8_export_and_verify(checkpoint: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """--calib-images: the int8 model is calibrated, verified (agreement printed) and hashed."""
    from edge.demo.scenes import save_scenes
    from export.quantize import QuantConfig

    calib = tmp_path / "calib"
    save_scenes(calib, 1_600_000, 4, 320, 240)
    (calib / "notes.txt").write_text("not an image")
    out = export_bundle(
        checkpoint,
        tmp_path / "q",
        imgsz=320,
        calib_images=calib,
        quant_config=QuantConfig(num_images=4),
        int8_min_iou=0.0,
        measure_memory=False,
    )
    printed = capsys.readouterr().out
    assert (
        "int8 vs fp32 on 4 calibration images (reference kernels, CPU-independent): mean mask IoU"
        in printed
    )
    assert "int8 vs fp32 on 4 calibration images (this host's kernels, " in printed
    m = read_manifest(out)
    assert m.precisions == ("fp32", "int8")
    verify_file(out, m, "fastsam.int8.onnx")
    q = m.quantization.to_json()
    assert q["status"] == "ok" and q["format"] == "QDQ" and q["calibration_source"] == str(calib)
    assert q["float_branches"] == ["cv3", "cv4"] and q["float_nodes"] > 6
    assert q["float_ops"] == [] and q["activations"] == "uint8 per-tensor"
    assert m.detector_gop > 0  # counted at export, for bench on any bundle
    assert 0.0 <= q["verify"]["mean_iou_fp32_to_int8"] <= 1.0
    assert q["verify"]["kernels"] == "reference" and q["verify_host"]["kernels"] == "host"
    assert q["verify"]["speedup"] == q["verify_host"]["speedup"]  # speed is this host's
    assert q["verify_host"]["cpu_class"]["name"] in {
        "x86-vnni",
        "x86-avx2",
        "x86",
        "arm-i8mm",
        "arm-dotprod",
        "arm-neon",
    }
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "fastsam.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_refused_below_threshold(checkpoint: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from export.quantize import QuantConfig

    out = export_bundle(
        checkpoint,
        tmp_path / "r",
        imgsz=256,
        quant_config=QuantConfig(num_images=2),
        int8_min_iou=1.01,
        measure_memory=False,
    )
    assert "REFUSED" in capsys.readouterr().out
    m = read_manifest(out)
    assert m.precisions == ("fp32",) and not (out / "fastsam.int8.onnx").exists()
    assert m.quantization.to_json()["status"].startswith("refused")


def test_int8_bad_calibration_dir(checkpoint: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="--calib-images: no readable images"):
        export_bundle(
            checkpoint, tmp_path / "o", imgsz=256, calib_images=empty, measure_memory=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
