"""Stage 5: run both TFLite models on the seeded inputs and compare with PyTorch.

Inputs are mapped by name (TFLite sorts them and prefixes `serving_default_`) and put
into the layout onnx2tf chose; outputs are compared in a fixed order: count, names,
shapes, then values. The deliverable is also loaded in a process without TensorFlow.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..failures import ConversionError, FailureKind
from ..results import ExportResult, OutputComparison, SavedModelResult, TFLiteResult, VerifyResult, labelled_comparisons
from ..spec import ModelSpec
from .metrics import compare


def run_tflite(path: str, saved: SavedModelResult, arrays, threads: int) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    runner = interpreter.get_signature_runner("serving_default")
    feed = {key: np.ascontiguousarray(np.transpose(a, perm))
            for (_, key), perm, a in zip(saved.input_names, saved.input_perms, arrays)}
    result = runner(**feed)
    missing = [key for _, key in saved.output_names if key not in result]
    if missing or len(result) != len(saved.output_names):
        raise ConversionError(FailureKind.SHAPE_MISMATCH,
                              f"TFLite outputs {sorted(result)} do not match the expected "
                              f"{[k for _, k in saved.output_names]}")
    return [result[key] for _, key in saved.output_names]


def deploy_check(path: str) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-m", "converter.stages.deploy", path],
                          capture_output=True, text=True, timeout=300,
                          cwd=str(Path(__file__).resolve().parents[2]))
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return False, f"TFLite runtime process died (status {proc.returncode})"
    if report["tensorflow_imported"]:
        return False, "deploy check imported tensorflow, so it proves nothing"
    return report["ok"], report["error"]


def output_perm(reference: np.ndarray, fp32_output: np.ndarray) -> tuple[int, ...]:
    """How onnx2tf laid out an output: as PyTorch, or channels-last (a 4-D segmentation map comes
    out NHWC, like the inputs). The shape decides; where both layouts read the same ([1, 8, 8, 8]),
    the float32 values do: the layout that matches PyTorch better is the one onnx2tf chose."""
    torch_shape, tflite_shape = tuple(reference.shape), tuple(fp32_output.shape)
    rank = len(torch_shape)
    identity = tuple(range(rank))
    if not 3 <= rank <= 5:
        return identity
    channels_last = (0, *range(2, rank), 1)
    as_channels_last = tuple(torch_shape[i] for i in channels_last)
    if tflite_shape != as_channels_last:
        return identity
    if tflite_shape != torch_shape:
        return channels_last

    def error(perm):
        return float(np.max(np.abs(np.transpose(fp32_output, np.argsort(perm)) - reference)))

    return min((identity, channels_last), key=error)


def verify(spec: ModelSpec, arrays, reference, saved: SavedModelResult, tfl: TFLiteResult,
           threads: int) -> VerifyResult:
    start = time.perf_counter()
    results: dict[str, tuple[OutputComparison, ...]] = {}
    perms: tuple[tuple[int, ...], ...] = ()
    for label, path in (("fp32", tfl.fp32_path), ("drq", tfl.drq_path)):  # fp32 first: it decides the layout
        outputs = run_tflite(path, saved, arrays, threads)
        perms = perms or tuple(output_perm(ref, out) for ref, out in zip(reference, outputs))
        back = [np.transpose(out, np.argsort(perm)) for out, perm in zip(outputs, perms)]  # to PyTorch's layout
        results[label] = tuple(compare(name, ref, out, spec.tolerance_for(label, name))
                               for (name, _), ref, out in zip(saved.output_names, reference, back))
    deployable, message = deploy_check(tfl.drq_path)
    return VerifyResult(fp32=results["fp32"], drq=results["drq"], deployable=deployable,
                        deploy_message=message, seconds=time.perf_counter() - start, output_perms=perms)


def verdict(export: ExportResult, result: VerifyResult, tfl: TFLiteResult,
            allow_flex: bool) -> ConversionError | None:
    """The first failed check, in a fixed order: shapes, then ONNX / fp32 / DRQ values, then deployability."""
    labelled = labelled_comparisons(export, result)
    for label, comparison in labelled:
        if not comparison.shape_ok:
            return ConversionError(FailureKind.SHAPE_MISMATCH, comparison.describe(label))
    for label, comparison in labelled:
        if not comparison.passed:
            return ConversionError(FailureKind.NUMERIC_MISMATCH, comparison.describe(label))
    if not result.deployable and not (allow_flex and tfl.flex_ops):
        kind = FailureKind.FLEX_OPS if tfl.flex_ops else FailureKind.TFLITE_ERROR
        return ConversionError(kind, f"deliverable does not run on the TFLite runtime without "
                                     f"TensorFlow: {result.deploy_message}")
    return None
