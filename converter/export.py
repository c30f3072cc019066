"""Stage 2: PyTorch -> ONNX (opset 17), checked with onnx.checker and onnxruntime.

Strategy `auto` tries the legacy TorchScript exporter first (the original workflow's
exporter: opset 17, one file, BatchNorm folded) and falls back to the dynamo exporter,
which handles what legacy cannot (adaptive pooling with non-dividing sizes, ExportedPrograms).
"""
from __future__ import annotations

import re
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from .load import LoadedModel
from .metrics import compare
from .results import ConversionError, ExportResult, FailureKind, reraise_if_memory
from .spec import OPSET, ModelSpec

_UNSUPPORTED_OP = re.compile(r"ONNX export of operator ([\w:.]+)[^.\n\[]*")
_ATEN_OP = re.compile(r"\baten[.:]{1,2}(?!default\b)[a-z_0-9]+")
KNOWN_FIXES = {
    "adaptive_avg_pool2d": "give the model a fixed input size whose H and W the pooling output "
                           "size divides, or replace AdaptiveAvgPool2d by a fixed-size AvgPool2d",
    "adaptive_max_pool2d": "use a fixed input size that the output size divides, or a fixed MaxPool2d",
}


def exporter_order(strategy: str, fmt: str) -> list[str]:
    if strategy != "auto":
        return [strategy]
    # an ExportedProgram is already torch.export's graph: only the dynamo exporter takes it
    return ["dynamo"] if fmt == "exported_program" else ["legacy", "dynamo"]


def _export_once(exporter: str, loaded: LoadedModel, args, path: Path, input_names, output_names):
    path.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(loaded.module, tuple(args), str(path), opset_version=OPSET,
                          dynamo=(exporter == "dynamo"), external_data=False,
                          input_names=list(input_names), output_names=list(output_names))


def describe_export_error(exc: BaseException) -> str:
    text = str(exc)
    match = _UNSUPPORTED_OP.search(text)
    if match:
        return f"Unsupported: {match.group(0).strip().rstrip('.')}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = (lines[0] if lines else "").replace(" Next steps:", "")
    ops = sorted(set(_ATEN_OP.findall(text)))
    named = f" (op {', '.join(ops[:3])})" if ops and not any(op in first for op in ops) else ""
    return f"{type(exc).__name__}: {first}{named}"


def read_back(path: Path) -> tuple[int, tuple[tuple[int, ...], ...]]:
    """The opset and input shapes actually written (exporters may silently differ)."""
    model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    initializers = {i.name for i in model.graph.initializer}
    shapes = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        shapes.append(tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims))
    return opset, tuple(shapes)


def run_onnxruntime(path: Path, input_names, arrays, threads: int) -> tuple[list[str], list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {n: a for n, a in zip(input_names, arrays) if n in wanted}
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feed)


def export_onnx(spec: ModelSpec, loaded: LoadedModel, arrays, reference, out_path: Path,
                output_names, threads: int) -> ExportResult:
    start = time.perf_counter()
    args = [torch.from_numpy(a) for a in arrays]
    input_names = [i.name for i in loaded.inputs]
    attempts, errors = [], []
    for exporter in exporter_order(spec.exporter, loaded.format):
        try:
            _export_once(exporter, loaded, args, out_path, input_names, output_names)
        except Exception as exc:  # every exporter failure is data for the message below
            reraise_if_memory(exc)
            print(f"--- the {exporter} exporter failed:", file=sys.stderr)
            traceback.print_exception(exc)  # into convert.log: the one-line message cannot hold it
            errors.append((exporter, exc))
            attempts.append(f"{exporter}: {describe_export_error(exc)}")
            continue
        attempts.append(f"{exporter}: ok")
        break
    else:
        raise ConversionError(FailureKind.EXPORT_ERROR, _all_failed_message(errors))

    try:
        onnx.checker.check_model(str(out_path), full_check=True)
    except Exception as exc:
        reraise_if_memory(exc)
        raise ConversionError(FailureKind.EXPORT_ERROR,
                              f"{exporter} exporter wrote an invalid ONNX file: {describe_export_error(exc)}") from exc
    opset, shapes = read_back(out_path)
    expected = tuple(tuple(i.shape) for i in loaded.inputs)
    if shapes != expected:
        raise ConversionError(FailureKind.EXPORT_ERROR,
                              f"{exporter} exporter wrote input shapes {list(map(list, shapes))}, "
                              f"expected the static shapes {list(map(list, expected))}")
    try:
        names, outputs = run_onnxruntime(out_path, input_names, arrays, threads)
    except Exception as exc:
        reraise_if_memory(exc)
        raise ConversionError(FailureKind.EXPORT_ERROR,
                              f"onnxruntime cannot run the exported file: {describe_export_error(exc)}") from exc
    if len(outputs) != len(reference):
        raise ConversionError(FailureKind.SHAPE_MISMATCH,
                              f"ONNX has {len(outputs)} outputs, PyTorch returns {len(reference)}")
    comparisons = tuple(compare(n, r, o, spec.tolerance_for("onnx", n))
                        for n, r, o in zip(names, reference, outputs))
    return ExportResult(exporter=exporter, opset=opset, onnx_path=str(out_path),
                        onnx_bytes=out_path.stat().st_size, input_shapes=shapes,
                        attempts=tuple(attempts), outputs=comparisons,
                        seconds=time.perf_counter() - start)


def _all_failed_message(errors) -> str:
    parts = [f"{name}: {describe_export_error(exc)}" for name, exc in errors]
    message = "every exporter failed (" + "; ".join(parts) + ")"
    for op, fix in KNOWN_FIXES.items():
        if any(op in str(exc) for _, exc in errors):
            return f"{message}; known fix for {op}: {fix}"
    return message
