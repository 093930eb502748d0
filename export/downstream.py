"""Run a variant of an ONNX model only where it differs from a base model.

A candidate of the int8 sensitivity pass (:mod:`export.int8plan`) keeps one block float and
is otherwise the plan it is ranked against: the quantizer rewrites that block and what reads
it, and leaves every other node as it is. Such a node computes, on the same image, exactly
what the base computes (the same operator on the same inputs; with graph optimisations off,
the CPU-independent reference kernels, each node runs its own kernel whatever its neighbours).
So the variant's outputs on an image are those of its *downstream part* (the nodes it changed
and everything that reads them), fed the base's values of the tensors where the two parts
meet; for a block late in the network (the neck, a head branch) that is a small part of it.

With fused kernels (graph optimisations on) this does not hold: a cut through a
QuantizeLinear / DequantizeLinear pair changes what is fused. :class:`export.int8plan.HeldOutEval`
uses it with the reference kernels only, and checks it against a full run of one variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Downstream", "affected_nodes", "boundary", "downstream", "with_outputs"]


@dataclass(frozen=True)
class Downstream:
    """The part of a variant that must run.

    Attributes:
        model: Serialized ONNX model: the variant's affected nodes and their initializers.
        inputs: Tensors it reads that the base computes alike (its graph inputs).
        outputs: The variant's graph outputs it computes (the others are the base's).
    """

    model: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _signature(node: Any) -> tuple[Any, ...]:
    return (
        node.op_type,
        node.domain,
        tuple(node.input),
        tuple(node.output),
        tuple(a.SerializeToString() for a in node.attribute),
    )


def _comparable(model: Any) -> bool:
    """Nodes named uniquely and without subgraphs (which may read outer tensors unseen)."""
    from onnx import AttributeProto

    names = [n.name for n in model.graph.node]
    if "" in names or len(set(names)) != len(names):
        return False
    graphs = (AttributeProto.GRAPH, AttributeProto.GRAPHS)
    return not any(a.type in graphs for n in model.graph.node for a in n.attribute)


def affected_nodes(base: Any, variant: Any) -> set[str] | None:
    """The variant's nodes whose outputs may differ from the base's.

    A node is *changed* when the base has no node of its name with the same operator, inputs,
    outputs and attributes, or when an initializer it reads differs from the base's (or the
    base lacks it); a node is *affected* when it is changed or reads a tensor an affected node
    writes. Every other node computes what the base's node of its name computes: by induction
    over the graph order, its inputs are the base's.

    Args:
        base: ``onnx.ModelProto``.
        variant: ``onnx.ModelProto`` (its nodes in graph order, as ONNX requires).

    Returns:
        Names of the affected nodes, or ``None`` when the graphs cannot be compared node by node
        (unnamed or duplicate node names, or subgraph attributes).
    """
    if not (_comparable(base) and _comparable(variant)):
        return None
    ours = {n.name: _signature(n) for n in base.graph.node}
    base_init = {i.name: i for i in base.graph.initializer}
    init = {i.name: i for i in variant.graph.initializer}

    def same_constant(name: str) -> bool:
        return name in base_init and base_init[name].SerializeToString() == (
            init[name].SerializeToString()
        )

    written: set[str] = set()  # tensors written by affected nodes
    affected: set[str] = set()
    for node in variant.graph.node:
        changed = ours.get(node.name) != _signature(node) or any(
            i in init and not same_constant(i) for i in node.input
        )
        if changed or written.intersection(node.input):
            affected.add(node.name)
            written.update(node.output)
    return affected


def _part(variant: Any, affected: set[str]) -> tuple[list[Any], list[str], list[str]]:
    """``(nodes, inputs, initializers)`` of the affected part, in graph order."""
    nodes = [n for n in variant.graph.node if n.name in affected]
    written = {o for n in nodes for o in n.output}
    init = {i.name for i in variant.graph.initializer}
    read = list(dict.fromkeys(i for n in nodes for i in n.input if i and i not in written))
    return nodes, [i for i in read if i not in init], [i for i in read if i in init]


def boundary(variant: Any, affected: set[str]) -> list[str]:
    """Tensors the affected nodes read that the rest of the variant (or its graph inputs)
    provides: what the base must hand over. Initializers are the variant's own.

    Args:
        variant: ``onnx.ModelProto``.
        affected: :func:`affected_nodes`.

    Returns:
        Tensor names, first read first.
    """
    return _part(variant, affected)[1]


def downstream(variant: Any, affected: set[str], types: Mapping[str, int]) -> Downstream | None:
    """The variant's affected part as a model of its own.

    Args:
        variant: ``onnx.ModelProto``.
        affected: :func:`affected_nodes`.
        types: ONNX element type of each tensor it may read (e.g. of the base's values).

    Returns:
        The part, or ``None`` when the type of a tensor it reads is unknown.
    """
    from onnx import helper

    nodes, inputs, inits = _part(variant, affected)
    if any(i not in types for i in inputs):
        return None
    written = {o for n in nodes for o in n.output}
    outputs = [o for o in variant.graph.output if o.name in written]
    by_name = {i.name: i for i in variant.graph.initializer}
    graph = helper.make_graph(
        nodes,
        "downstream",
        [helper.make_tensor_value_info(i, types[i], None) for i in inputs],
        outputs,
        [by_name[i] for i in inits],
    )
    model = helper.make_model(
        graph, opset_imports=variant.opset_import, ir_version=variant.ir_version
    )
    return Downstream(model.SerializeToString(), tuple(inputs), tuple(o.name for o in outputs))


def with_outputs(model: Any, names: Iterable[str]) -> bytes:
    """``model`` serialized with ``names`` added to its graph outputs (its own outputs first).

    Args:
        model: ``onnx.ModelProto`` (not modified).
        names: Tensors to expose.
    """
    from onnx import helper

    out = type(model)()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(helper.make_empty_tensor_value_info(name))
            have.add(name)
    return out.SerializeToString()
