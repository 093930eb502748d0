"""export.quantize: strided calibration and recipe options on the demo detector."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.export


@pytest.mark.parametrize(
    ("n", "expected"), [(24, 4), (6, 3), (7, 1), (5, 1), (2, 2), (1, 1), (4, 4), (9, 3)]
)
def test_calibration_stride(n, expected):
    from export.quantize import calibration_stride

    assert calibration_stride(n) == expected


def _scales(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name.endswith(("_scale", "_zero_point"))
    }


def test_strided_calibration_equals_one_pass(demo_bundle, tmp_path, monkeypatch):
    """Calibrating 2 images at a time gives the same int8 model as all 6 at once (MinMax)."""
    import export.quantize as q
    from edge.demo.scenes import generate_scene

    images = [generate_scene(1_500_000 + i, 320, 320).image for i in range(6)]
    fp32 = demo_bundle / "fastsam.fp32.onnx"
    monkeypatch.setattr(q, "calibration_stride", lambda n, most=4: 2)
    q.write_int8_detector(fp32, tmp_path / "strided.onnx", images, (320, 320))
    monkeypatch.setattr(q, "calibration_stride", lambda n, most=4: n)
    q.write_int8_detector(fp32, tmp_path / "whole.onnx", images, (320, 320))
    a, b = _scales(tmp_path / "strided.onnx"), _scales(tmp_path / "whole.onnx")
    assert a.keys() == b.keys() and len(a) > 100
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    ("config", "present", "absent"),
    [
        ({}, {"QuantizeLinear", "DequantizeLinear"}, {"QLinearConv"}),
        ({"format": "qoperator"}, {"QLinearConv"}, set()),
        ({"float_ops": ("Sigmoid", "Mul")}, {"Sigmoid", "Mul", "QuantizeLinear"}, set()),
    ],
)
def test_recipe_options_change_the_graph(demo_bundle, tmp_path, config, present, absent):
    import onnx

    from edge.demo.scenes import generate_scene
    from export.quantize import QuantConfig, write_int8_detector

    images = [generate_scene(1_500_000 + i, 320, 320).image for i in range(2)]
    out = tmp_path / "q.onnx"
    info = write_int8_detector(
        demo_bundle / "fastsam.fp32.onnx", out, images, (320, 320), config=QuantConfig(**config)
    )
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert present <= ops and not (absent & ops)
    if config.get("float_ops"):
        # every Sigmoid stays float: no QDQ pair directly around it is needed by the recipe
        assert info["float_ops"] == ["Sigmoid", "Mul"] and info["float_nodes"] > 100


@pytest.mark.parametrize(
    ("config", "message"),
    [({"format": "qqq"}, "quant format"), ({"activations": "int4"}, "activations")],
)
def test_recipe_options_rejected(demo_bundle, tmp_path, config, message):
    from export.quantize import QuantConfig, write_int8_detector

    with pytest.raises(ValueError, match=message):
        write_int8_detector(
            demo_bundle / "fastsam.fp32.onnx", tmp_path / "q.onnx", [], (320, 320),
            config=QuantConfig(**config),
        )  # fmt: skip


def _calib(n=4, size=320):
    from edge.demo.scenes import generate_scene
    from export.quantize import CalibrationSet

    scenes = [generate_scene(1_500_000 + i, size, size) for i in range(n)]
    return CalibrationSet([s.image for s in scenes], "scenes", [s.masks for s in scenes])


def test_verify_int8_reports_host_and_reference(demo_bundle):
    from export.quantize import agreement_of, compare_precisions, verify_int8

    fp32, int8 = demo_bundle / "fastsam.fp32.onnx", demo_bundle / "fastsam.int8.onnx"
    args = (_calib(), (320, 320), False, 0.4, 0.9, 300, 1)
    both = verify_int8(fp32, int8, *args)
    assert set(both) == {"host", "reference"}
    assert both["host"]["cpu_class"]["name"] and both["reference"]["kernels"] == "reference"
    saturating = both["host"]["cpu_class"]["saturates"]
    for k in ("host", "reference"):
        # the demo int8 model is a good one: on the reference, and on exact integer kernels;
        # x86 without VNNI saturates u8 x s8 sums, so its own agreement is only bounded
        assert (0.0 if k == "host" and saturating else 0.9) <= agreement_of(both[k]) <= 1.0
        assert both[k]["recall_fp32"] == both["host"]["recall_fp32"]  # fp32 run once
        # one pass with both == one pass per kernel family
        alone = compare_precisions(fp32, int8, *args, kernels=k)
        assert alone["mean_iou_fp32_to_int8"] == both[k]["mean_iou_fp32_to_int8"]
    with pytest.raises(ValueError, match="kernels"):
        compare_precisions(fp32, int8, *args, kernels="vnni")


def _fake_report(agree, kernels):
    return {"images": 1, "held_out": True, "kernels": kernels, "mean_iou_fp32_to_int8": agree,
            "mean_iou_int8_to_fp32": agree, "recall_loss": 0.0, "recall_basis": "ground truth",
            "infer_ms_fp32": 10.0, "infer_ms_int8": 4.0, "threads": 1, "speedup": 2.5}  # fmt: skip


@pytest.mark.parametrize(
    ("host", "ref", "status", "warned"),
    [
        (0.99, 0.99, "ok", False),
        (0.80, 0.99, "ok", True),  # an AVX2 workstation must not refuse a good Pi model
        (0.99, 0.90, "refused", True),  # nor pass one that a Pi computes badly
        (0.995, 0.99, "ok", False),
    ],
)
def test_int8_step_decides_on_the_reference(demo_bundle, tmp_path, monkeypatch, caplog,
                                            host, ref, status, warned):  # fmt: skip
    """The plan search chose a file; its held-out verdict is the reference kernels'."""
    import shutil

    import export.int8plan as plan
    import export.quantize as q
    from edge.bundle import Int8Plan, Int8Target, QuantSection, Thresholds

    shutil.copy(demo_bundle / "fastsam.fp32.onnx", tmp_path / "fastsam.fp32.onnx")
    monkeypatch.setattr(q, "load_calibration", lambda *a, **k: _calib(4))
    chosen = tmp_path / "chosen.onnx"
    chosen.write_bytes(b"x")

    class Eval:
        recall_basis = "ground truth"

        def __init__(self, *a, **k):
            pass

        def __len__(self):
            return 1

        def measure(self, path, kernels="host", timed=False):
            return _fake_report(host if kernels == "host" else ref, kernels)

    result = plan.PlanResult(
        chosen, {"format": "QDQ"}, Int8Plan("search", Int8Target(), "fixed", True),
        _fake_report(host, "host"), chosen,
    )  # fmt: skip
    monkeypatch.setattr(plan, "HeldOutEval", Eval)
    monkeypatch.setattr(plan, "choose_plan", lambda *a, **k: result)
    with caplog.at_level("WARNING"):
        section = q.quantize_detector(tmp_path, (320, 320), False, Thresholds(), min_iou=0.95)
    assert section.ok == (status == "ok")
    rec = section.to_json()
    assert QuantSection.from_json(rec) == section and rec["format"] == "QDQ"
    assert rec["status"].startswith(status)
    assert rec["verify"]["mean_iou_fp32_to_int8"] == ref
    assert rec["verify_host"]["mean_iou_fp32_to_int8"] == host
    assert (tmp_path / "fastsam.int8.onnx").exists() == (status == "ok")
    assert ("computes int8 differently" in caplog.text) == warned
    assert rec.get("host_differs", False) == (abs(host - ref) > 0.01)
    assert rec["held_out"]["images"] == 1 and rec["held_out"]["calibration_images"] == 2


@pytest.mark.skipif(
    __import__("platform").machine() != "x86_64", reason="qemu-x86_64 is for x86-64 hosts"
)
def test_reference_verify_is_cpu_independent(demo_bundle, tmp_path):
    """The reference agreement on an emulated AVX2 CPU (qemu Haswell, no VNNI) equals this
    host's: the export's decision does not depend on the workstation's CPU."""
    import json
    import subprocess
    import sys

    from export.quantize import verify_int8

    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_quantize import _calib\n"
        "from export.quantize import verify_int8\n"
        f"b = Path({str(demo_bundle)!r})\n"
        "r = verify_int8(b / 'fastsam.fp32.onnx', b / 'fastsam.int8.onnx', _calib(3), "
        "(320, 320), False, 0.4, 0.9, 300, 1)\n"
        "print(json.dumps(r))\n"
    )
    proc = subprocess.run(
        ["qemu-x86_64-static", "-cpu", "Haswell", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    emulated = json.loads(proc.stdout.strip().splitlines()[-1])
    native = verify_int8(
        demo_bundle / "fastsam.fp32.onnx", demo_bundle / "fastsam.int8.onnx", _calib(3),
        (320, 320), False, 0.4, 0.9, 300, 1,
    )  # fmt: skip
    assert emulated["host"]["cpu_class"]["name"] == "x86-avx2"
    for key in ("mean_iou_fp32_to_int8", "mean_iou_int8_to_fp32", "recall_int8"):
        assert emulated["reference"][key] == pytest.approx(native["reference"][key], abs=2e-3)


@pytest.mark.parametrize(
    ("methods", "n"),
    [
        (("percentile", "entropy"), 6),  # one pass, two strides of 3 (histograms merged)
        (("entropy",), 4),
        (("minmax", "percentile"), 5),  # two passes; 5 images: strides of 1
    ],
)
def test_calibrate_ranges_equals_quantize_static(demo_bundle, tmp_path, methods, n):
    """One pass for both histogram methods gives each the ranges onnxruntime's calibrator for
    that method alone gives (quantize_static calibrating into its cache)."""
    from helpers import assert_same_ranges

    from edge.demo.scenes import generate_scene
    from export.quantize import (
        QuantConfig,
        calibrate_ranges,
        calibrate_ranges_supported,
        prepare_model,
        quantize_prepared,
    )

    assert calibrate_ranges_supported()  # the onnxruntime of this environment was checked
    images = [generate_scene(1_500_000 + i, 320, 320).image for i in range(n)]
    prepped = prepare_model(demo_bundle / "fastsam.fp32.onnx", tmp_path / "prepped.onnx")
    shared = {m: tmp_path / f"shared-{m}.json" for m in methods}
    calibrate_ranges(prepped, images, (320, 320), False, shared)
    for m in methods:
        alone = tmp_path / f"alone-{m}.json"
        quantize_prepared(prepped, tmp_path / f"{m}.onnx", images, (320, 320),
                          config=QuantConfig(method=m, num_images=n), cache=alone)  # fmt: skip
        assert_same_ranges(shared[m], alone)
    with pytest.raises(ValueError, match="unknown"):
        calibrate_ranges(prepped, images, (320, 320), False, {"kl": tmp_path / "x.json"})
