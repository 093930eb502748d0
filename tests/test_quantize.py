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
    from edge.scenes import generate_scene

    images = [generate_scene(1_500_000 + i, 320, 320).image for i in range(6)]
    fp32 = demo_bundle / "fastsam.fp32.onnx"
    monkeypatch.setattr(q, "calibration_stride", lambda n, most=4: 2)
    q.quantize_detector(fp32, tmp_path / "strided.onnx", images, (320, 320))
    monkeypatch.setattr(q, "calibration_stride", lambda n, most=4: n)
    q.quantize_detector(fp32, tmp_path / "whole.onnx", images, (320, 320))
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

    from edge.scenes import generate_scene
    from export.quantize import QuantConfig, quantize_detector

    images = [generate_scene(1_500_000 + i, 320, 320).image for i in range(2)]
    out = tmp_path / "q.onnx"
    info = quantize_detector(
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
    from export.quantize import QuantConfig, quantize_detector

    with pytest.raises(ValueError, match=message):
        quantize_detector(
            demo_bundle / "fastsam.fp32.onnx", tmp_path / "q.onnx", [], (320, 320),
            config=QuantConfig(**config),
        )  # fmt: skip
