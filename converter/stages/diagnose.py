"""Where a float32 conversion departs from ONNX: the first diverging node (child side).

onnx2tf can compare the output of every ONNX node in its TF model against onnxruntime
(`check_onnx_tf_outputs_elementwise_close_full`), but it only prints the table. Its comparison
function is wrapped here to keep the numbers, on the model's own seeded inputs, and each node's
error is judged against the output's range like every other comparison in the harness. Runs
only when the float32 TFLite disagrees with PyTorch while ONNX agrees: a second onnx2tf run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
from pathlib import Path

import numpy as np

from ..protocol import plain, write_json_atomic, write_text_atomic
from ..results import Divergence, NodeError
from .savedmodel import onnx2tf_options, prepare_onnx2tf


def _node_of(onnx_path: Path) -> dict[str, tuple[str, str]]:
    """ONNX tensor name -> (node name, op type) of the node that produces it."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {out: (node.name or out, node.op_type) for node in graph.node for out in node.output}


def _node_errors(captured: dict, producers: dict) -> list[NodeError]:
    rows = []
    for (onnx_name, _), checked in captured.items():
        reference, flag, max_abs = checked[0], checked[1], checked[2]
        node, op_type = producers.get(onnx_name, (onnx_name, "?"))
        comparable = flag != 2 and isinstance(max_abs, (int, float, np.floating)) \
            and np.asarray(reference).dtype.kind == "f" and np.asarray(reference).size > 0
        if not comparable:
            rows.append(NodeError(node, op_type, onnx_name, tuple(np.shape(reference)), None, None, None))
            continue
        spread = float(np.ptp(reference))
        rows.append(NodeError(node, op_type, onnx_name, tuple(np.shape(reference)), float(max_abs), spread,
                              float(max_abs) / spread if spread > 0 else (0.0 if max_abs == 0 else float("inf"))))
    return rows


def first_divergence(onnx_path: Path, input_names, arrays, input_perms, keep, pseudo_ops,
                     tolerance: float, work_dir: Path, mode: str = "fast") -> Divergence:
    converter = prepare_onnx2tf()
    work_dir.mkdir(parents=True, exist_ok=True)
    copy = work_dir / "onnx2tf_input.onnx"
    shutil.copyfile(onnx_path, copy)
    custom = []
    for name, array, perm in zip(input_names, arrays, input_perms):
        path = work_dir / f"input_{len(custom)}.npy"
        np.save(path, np.transpose(array, perm))  # onnx2tf reads them in its own (TF) layout
        custom.append([name, str(path), 0.0, 1.0])
    captured: dict = {}
    validate = converter.onnx_tf_tensor_validation

    def keep_results(**kwargs):
        results = validate(**kwargs)
        captured.update(results)
        return results

    converter.onnx_tf_tensor_validation = keep_results
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its colour table; the numbers are kept below
            converter.convert(**onnx2tf_options(copy, work_dir / "onnx2tf_out", keep, pseudo_ops, mode),
                              check_onnx_tf_outputs_elementwise_close_full=True,
                              custom_input_op_name_np_data_path=custom)
    finally:
        converter.onnx_tf_tensor_validation = validate
    rows = _node_errors(captured, _node_of(copy))
    first = next((r for r in rows if r.range_rel_err is not None and r.range_rel_err > tolerance), None)
    table = work_dir / "node_errors.md"
    write_json_atomic(work_dir / "node_errors.json", [plain(dataclasses.asdict(r)) for r in rows])
    write_text_atomic(table, _markdown(rows, tolerance, first))
    return Divergence(first, tolerance, sum(r.range_rel_err is not None for r in rows), str(table))


def _markdown(rows: list[NodeError], tolerance: float, first: NodeError | None) -> str:
    lines = ["# Per-node error of the TF model against onnxruntime", "",
             f"Seeded sample inputs; error = max |TF - ONNX| / range of the ONNX output; tolerance {tolerance:g}.",
             "", "| # | node | op | output | shape | max abs err | range | range-relative | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        mark = "FIRST DIVERGENCE" if r is first else ("over" if (r.range_rel_err or 0) > tolerance else "")
        cells = [str(i), r.node, r.op_type, r.output, "x".join(map(str, r.shape)) or "scalar",
                 *("-" if v is None else f"{v:.3g}" for v in (r.max_abs_err, r.output_range, r.range_rel_err)),
                 mark]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
