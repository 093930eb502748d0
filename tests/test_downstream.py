"""export.downstream: a variant's changed part, run on the base's tensors, gives its outputs."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.export


def _model(scale=2.0, relu="relu", alpha=None, names=True):
    """X -> add (X + 1) -> mul (* scale) -> relu|leaky -> Y, and X -> neg -> Z."""
    from onnx import TensorProto, helper, numpy_helper

    act = (
        helper.make_node("LeakyRelu", ["T2"], ["Y"], name="act", alpha=alpha)
        if alpha is not None
        else helper.make_node("Relu", ["T2"], ["Y"], name="act")
    )
    nodes = [
        helper.make_node("Add", ["X", "one"], ["T1"], name="add"),
        helper.make_node("Mul", ["T1", "scale"], ["T2"], name="mul"),
        act,
        helper.make_node("Neg", ["X"], ["Z"], name="neg"),
    ]
    if not names:
        nodes[3].name = ""
    graph = helper.make_graph(
        nodes, relu,
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array([1.0], np.float32), "one"),
         numpy_helper.from_array(np.array([scale], np.float32), "scale")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("variant", "affected", "reads"),
    [
        ({}, set(), []),  # the same model: nothing to run
        ({"scale": 3.0}, {"mul", "act"}, ["T1"]),  # an initializer's value changed
        ({"alpha": 0.1}, {"act"}, ["T2"]),  # another operator with an attribute
    ],
)
def test_downstream_part_gives_the_variants_outputs(variant, affected, reads):
    from onnx import TensorProto

    from edge.session import create_session
    from export.downstream import affected_nodes, boundary, downstream, with_outputs

    base, var = _model(), _model(**variant)
    got = affected_nodes(base, var)
    assert got == affected and boundary(var, got) == reads
    x = np.array([[-2.0, -0.5, 0.5, 2.0]], np.float32)
    session = create_session(with_outputs(base, reads), threads=1, optimization="disable")
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": x}),
                      strict=True))  # fmt: skip
    part = downstream(var, got, {"T1": TensorProto.FLOAT, "T2": TensorProto.FLOAT})
    assert part.inputs == tuple(reads)
    assert part.outputs == (("Y",) if affected else ())
    whole = dict(zip(["Y", "Z"], create_session(var.SerializeToString(), threads=1).run(
        None, {"X": x}), strict=True))  # fmt: skip
    if affected:
        sub = create_session(part.model, threads=1, optimization="disable")
        y = sub.run(None, {i: values[i] for i in part.inputs})[0]
        np.testing.assert_array_equal(y, whole["Y"])
    np.testing.assert_array_equal(values["Z"], whole["Z"])  # unaffected: the base's
    assert downstream(var, got, {}) is None or not reads  # a type it reads is unknown


def test_graphs_without_node_names_are_not_compared():
    from export.downstream import affected_nodes

    assert affected_nodes(_model(), _model(names=False)) is None
    assert affected_nodes(_model(names=False), _model()) is None


def test_with_outputs_leaves_the_model_alone():
    import onnx

    from export.downstream import with_outputs

    base = _model()
    more = onnx.load_from_string(with_outputs(base, ["T1", "Y", "T1"]))
    assert [o.name for o in more.graph.output] == ["Y", "Z", "T1"]
    assert [o.name for o in base.graph.output] == ["Y", "Z"]
