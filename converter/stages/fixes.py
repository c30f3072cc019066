"""Known fixes the pipeline applies by itself, as data (child side).

Each fix is one the harness's own failure messages used to ask the user for. The pipeline
applies it, then verifies the result exactly as it verifies everything else; every applied fix
is recorded (`Result.fixes`) and shown in the reports. `auto_fixes = false` in a model's
sidecar turns them off.
"""
from __future__ import annotations

from pathlib import Path

from ..results import Fix

# TensorFlow ops that TFLite builtins lack -> onnx2tf's builtins-only replacement
# (replace_to_pseudo_operators, lower-case). The ONNX op of the same name produces each.
PSEUDO_OPS = {"Erf": "erf", "Asin": "asin", "Acos": "acos", "Atan": "atan"}


def _op_types(graph) -> set[str]:
    """Every op type in a graph, its subgraphs (If / Loop bodies) included."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found |= _op_types(attribute.g)
            for sub in attribute.graphs:
                found |= _op_types(sub)
    return found


def op_types(model) -> set[str]:
    """Every op type in a model: its graph, subgraphs and functions."""
    found = _op_types(model.graph)
    for function in model.functions:
        found |= {node.op_type for node in function.node}
    return found


def pseudo_ops_for_graph(onnx_path: Path, already: tuple[str, ...]) -> tuple[Fix, ...]:
    """Read the ONNX graph (milliseconds) for ops TFLite builtins lack, before onnx2tf runs once."""
    import onnx

    ops = op_types(onnx.load(str(onnx_path), load_external_data=False))
    return tuple(Fix("pseudo_ops", PSEUDO_OPS[op], f"the ONNX graph has {op}, which TFLite builtins lack")
                 for op in sorted(ops) if op in PSEUDO_OPS and PSEUDO_OPS[op] not in already)


def pseudo_ops_for_flex(flex_ops: tuple[str, ...], already: tuple[str, ...]) -> tuple[Fix, ...]:
    """The TFLite converter's own list of missing ops, mapped where onnx2tf has a replacement."""
    return tuple(Fix("pseudo_ops", PSEUDO_OPS[op], f"the TFLite converter needs Flex for {op}")
                 for op in sorted(set(flex_ops)) if op in PSEUDO_OPS and PSEUDO_OPS[op] not in already)


def onnx2tf_mode_fix(mode: str, previous: str, reason: str) -> Fix:
    return Fix("onnx2tf_mode", mode, f"in onnx2tf's {previous} mode {reason}")


def flatten_fix(kind: str, names: tuple[str, ...]) -> Fix:
    return Fix("flatten_outputs", f"{kind} -> {', '.join(names)}",
               f"the model returns a {kind}; ONNX and TFLite outputs are a flat list of tensors")

