"""Stage 2: PyTorch -> ONNX (opset 17), checked with onnx.checker and onnxruntime.

Strategy `auto` tries the legacy TorchScript exporter first (the original workflow's
exporter: opset 17, one file, BatchNorm folded; an ExportedProgram's module is traced for it)
and falls back to the dynamo exporter, which handles what legacy cannot (adaptive pooling with
non-dividing sizes), when legacy fails or its file does not match PyTorch.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path

import onnx
import torch

from ..failures import ConversionError, FailureKind, reraise_if_memory, stage_step
from ..metrics import compare
from ..results import ExportResult, Fix
from ..spec import OPSET, ModelSpec
from . import symbolics
from .graph import run_onnxruntime
from .load import LoadedModel
from .model_outputs import FlatOutputs

_UNSUPPORTED_OP = re.compile(r"ONNX export of operator ([\w:.]+)[^.\n\[]*")
_ATEN_OP = re.compile(r"\baten[.:]{1,2}(?!default\b)[a-z_0-9]+")
KNOWN_FIXES = {
    "adaptive_avg_pool2d": "give the model a fixed input size whose H and W the pooling output "
                           "size divides, or replace AdaptiveAvgPool2d by a fixed-size AvgPool2d",
    "adaptive_max_pool2d": "use a fixed input size that the output size divides, or a fixed MaxPool2d",
}


PT2_TRACE_FIX = Fix("pt2_legacy_trace", "", "the dynamo exporter keeps opset 18 when its down-conversion fails; "
                    "the ExportedProgram's module was traced for the legacy exporter at opset 17")


TORCHSCRIPT_NOT_DYNAMO = ("the dynamo exporter cannot take a TorchScript file (it exports nn.Modules and ExportedPrograms; "
                          "torch: 'Exporting a ScriptModule is not supported'): set exporter = \"legacy\" or \"auto\", or "
                          "give the model as a .pt2 (torch.export.save) or a state_dict with its factory")


def exporter_order(strategy: str, fmt: str, auto_fixes: bool = True) -> list[str]:
    if fmt == "torchscript":  # the dynamo exporter refuses every ScriptModule: trying it only hides legacy's reason
        if strategy == "dynamo":
            raise ConversionError(FailureKind.EXPORT_ERROR, TORCHSCRIPT_NOT_DYNAMO)
        return ["legacy"]
    if strategy != "auto":
        return [strategy]
    # for an ExportedProgram, `legacy` means: trace its module, then the legacy exporter (opset 17
    # where dynamo's own down-conversion fails, and faster), a known fix; dynamo takes the program as it is
    if fmt == "exported_program" and not auto_fixes:
        return ["dynamo"]
    return ["legacy", "dynamo"]


def export_target(exporter: str, loaded: LoadedModel, args, flatten: bool):
    """What the exporter is given, and the fix that took, if any."""
    if loaded.format == "exported_program":
        if exporter == "dynamo":
            return loaded.module, ()  # the exporter flattens the program's outputs by its output spec
        module = loaded.module.module()
        module = FlatOutputs(module) if flatten else module
        return torch.jit.trace(module, tuple(args), check_trace=False, strict=False), (PT2_TRACE_FIX,)
    if not flatten:
        return loaded.module, ()
    if loaded.format == "torchscript":  # a ScriptModule's dict cannot be exported: re-trace a wrapper
        return torch.jit.trace(FlatOutputs(loaded.module), tuple(args), check_trace=False, strict=False), ()
    return FlatOutputs(loaded.module), ()


def _export_once(exporter: str, target, args, path: Path, input_names, output_names):
    path.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(target, tuple(args), str(path), opset_version=OPSET,
                          dynamo=(exporter == "dynamo"), external_data=False,
                          input_names=list(input_names), output_names=list(output_names))


def _symbolic_fix(exporter: str, exc: BaseException, fixes, auto_fixes: bool) -> Fix | None:
    """An op the legacy exporter has no (right) symbolic for, but symbolics.py has: registered, so
    that the export can run again (a known fix)."""
    op = symbolics.missing_op(exc) if exporter == "legacy" and auto_fixes else None
    if op is None or any(f.detail == op for f in fixes):
        return None
    symbolics.register(op)
    return Fix("onnx_symbolic", op, f"the legacy ONNX exporter has no working symbolic for {op}; one written "
                                    "from its definition was registered")


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


def export_onnx(spec: ModelSpec, loaded: LoadedModel, arrays, reference, out_path: Path,
                output_names, threads: int, *, flatten: bool = False, outputs: list | None = None) -> ExportResult:
    """The first exporter whose ONNX file runs and matches PyTorch; the last one tried otherwise.
    `outputs`, when given, receives onnxruntime's outputs of the file kept."""
    start = time.perf_counter()
    args = [torch.from_numpy(a) for a in arrays]
    input_names = [i.name for i in loaded.inputs]
    attempts, errors = [], []
    order = exporter_order(spec.exporter, loaded.format, spec.auto_fixes)
    result = None
    for position, exporter in enumerate(order):
        last = position == len(order) - 1
        path = out_path.with_name(f"{out_path.stem}.{exporter}.onnx")  # an earlier attempt stays intact
        try:
            opset, shapes, comparisons, ran, fixes = _attempt(exporter, spec, loaded, args, arrays, reference, path,
                                                              input_names, output_names, flatten, threads)
        except ConversionError as exc:  # a file was written, and it is wrong
            if last:
                raise
            errors.append((exporter, exc))
            attempts.append(f"{exporter}: {exc.message}")
            continue
        except Exception as exc:  # every exporter failure is data for the message below
            reraise_if_memory(exc)
            print(f"--- the {exporter} exporter failed:", file=sys.stderr)
            traceback.print_exception(exc)  # into convert.log: the one-line message cannot hold it
            errors.append((exporter, exc))
            attempts.append(f"{exporter}: {describe_export_error(exc)}")
            continue
        if outputs is not None:
            outputs[:] = ran
        result = ExportResult(exporter=exporter, opset=opset, onnx_path=str(path),
                              onnx_bytes=path.stat().st_size, input_shapes=shapes,
                              attempts=(), outputs=comparisons, seconds=0.0, fixes=fixes)
        if all(c.passed for c in comparisons) or last:
            attempts.append(f"{exporter}: ok" if all(c.passed for c in comparisons)
                            else f"{exporter}: exported, but differs from PyTorch")
            break
        worst = max(comparisons, key=lambda c: c.range_rel_err)
        attempts.append(f"{exporter}: differs from PyTorch (output '{worst.name}' range-relative error "
                        f"{worst.range_rel_err:.3g})")
    if result is None:
        raise ConversionError(FailureKind.EXPORT_ERROR, _all_failed_message(errors))
    os.replace(result.onnx_path, out_path)
    for exporter in order:
        out_path.with_name(f"{out_path.stem}.{exporter}.onnx").unlink(missing_ok=True)
    return dataclasses.replace(result, onnx_path=str(out_path), attempts=tuple(attempts),
                               seconds=time.perf_counter() - start)


def _attempt(exporter: str, spec: ModelSpec, loaded: LoadedModel, args, arrays, reference, path: Path,
             input_names, output_names, flatten: bool, threads: int):
    """One exporter's file, written and checked: (opset, input shapes, comparisons, outputs, fixes). A
    failure for want of a symbolic that symbolics.py has registers it, and the export runs again."""
    added: list[Fix] = []
    while True:
        try:
            target, fixes = export_target(exporter, loaded, args, flatten)
            _export_once(exporter, target, args, path, input_names, output_names)
            return (*_check(exporter, path, loaded, input_names, arrays, reference, spec, threads),
                    tuple(fixes) + tuple(added))
        except Exception as exc:
            reraise_if_memory(exc)
            fix = _symbolic_fix(exporter, exc, added, spec.auto_fixes)
            if fix is None:
                raise
            print(f"--- the {exporter} exporter needs the symbolic for {fix.detail}: exporting again", file=sys.stderr)
            traceback.print_exception(exc)
            added.append(fix)


def _check(exporter: str, out_path: Path, loaded: LoadedModel, input_names, arrays, reference,
           spec: ModelSpec, threads: int):
    """The written file is valid, has the static input shapes, runs, and its outputs compared."""
    with stage_step(FailureKind.EXPORT_ERROR, f"{exporter} exporter wrote an invalid ONNX file", describe_export_error):
        onnx.checker.check_model(str(out_path), full_check=True)
    opset, shapes = read_back(out_path)
    expected = tuple(tuple(i.shape) for i in loaded.inputs)
    if shapes != expected:
        raise ConversionError(FailureKind.EXPORT_ERROR,
                              f"{exporter} exporter wrote input shapes {list(map(list, shapes))}, "
                              f"expected the static shapes {list(map(list, expected))}")
    with stage_step(FailureKind.EXPORT_ERROR, "onnxruntime cannot run the exported file", describe_export_error):
        names, outputs = run_onnxruntime(out_path, input_names, arrays, threads)
    if len(outputs) != len(reference):
        raise ConversionError(FailureKind.SHAPE_MISMATCH,
                              f"ONNX has {len(outputs)} outputs, PyTorch returns {len(reference)}")
    comparisons = tuple(compare(n, r, o, spec.tolerance_for("onnx", n))
                        for n, r, o in zip(names, reference, outputs))
    return opset, shapes, comparisons, outputs


def _all_failed_message(errors) -> str:
    reasons = [(name, exc.message if isinstance(exc, ConversionError) else describe_export_error(exc))
               for name, exc in errors]
    if len(reasons) == 1:
        message = f"the {reasons[0][0]} exporter failed: {reasons[0][1]}"
    else:
        message = "every exporter failed (" + "; ".join(f"{name}: {why}" for name, why in reasons) + ")"
    for op, fix in KNOWN_FIXES.items():
        if any(op in str(exc) for _, exc in errors):
            return f"{message}; known fix for {op}: {fix}"
    return message
