"""The checks against PyTorch: onnx2tf's TF model right after it is built (check_tf), then every
TFLite file (one per recipe) in stage 5 (verify), on the seeded inputs.

Inputs are mapped by name (TFLite sorts them and prefixes `serving_default_`) and put
into the layout onnx2tf chose; outputs are compared in a fixed order: count, names,
shapes, then values. The deliverable is also loaded in a process without TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..failures import ConversionError, FailureKind
from ..metrics import compare
from ..recipes import FP32
from ..results import Deliverable, ExportResult, Fix, SavedModelResult, TFLiteResult, VerifyResult
from ..spec import ModelSpec
from ..verdict import choose, fallback_fixes, first_problem


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


DEPLOY_AGREEMENT = 1e-5  # of an output's range: the same file on the same runtime, in another process


def deploy_check(path: str, saved: SavedModelResult, arrays, expected: list[np.ndarray]) -> tuple[bool, str]:
    """The deliverable on the TFLite runtime in a process that never imports TensorFlow (as on a
    phone: Flex kernels are then missing), on the sample inputs: it must run, and give what it gave
    here (outputs PyTorch gives as NaN may be NaN; they are judged against PyTorch, not here)."""
    work = Path(path).parent
    feed = {key: np.ascontiguousarray(np.transpose(a, perm))
            for (_, key), perm, a in zip(saved.input_names, saved.input_perms, arrays)}
    np.savez(work / "deploy_inputs.npz", **feed)
    try:
        proc = subprocess.run([sys.executable, "-m", "converter.stages.deploy", path, str(work / "deploy_inputs.npz"),
                               str(work / "deploy_outputs.npz")], capture_output=True, text=True, timeout=300,
                              cwd=str(Path(__file__).resolve().parents[2]))
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return False, f"TFLite runtime process died (status {proc.returncode})"
        if report["tensorflow_imported"]:
            return False, "deploy check imported tensorflow, so it proves nothing"
        if not report["ok"]:
            return False, report["error"]
        with np.load(work / "deploy_outputs.npz") as found:
            for (name, key), here in zip(saved.output_names, expected):
                there = found[key]
                if there.shape != here.shape or not np.array_equal(np.isnan(there), np.isnan(here)):
                    return False, f"output '{name}' differs without TensorFlow (shape {list(there.shape)})"
                finite = np.isfinite(here) & np.isfinite(there)
                spread = float(np.ptp(here[finite])) if finite.any() else 0.0
                if finite.any() and float(np.abs(here[finite] - there[finite]).max()) > DEPLOY_AGREEMENT * max(spread, 1e-12):
                    return False, f"output '{name}' differs without TensorFlow (the runtime gives other numbers)"
        return True, ""
    finally:
        for name in ("deploy_inputs.npz", "deploy_outputs.npz"):
            (work / name).unlink(missing_ok=True)


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


TF_LABEL = "TF model (onnx2tf)"


def check_tf(spec: ModelSpec, reference, saved: SavedModelResult, tf_outputs,
             export: ExportResult) -> tuple[SavedModelResult, ConversionError | None]:
    """onnx2tf's TF model against PyTorch, on the float32 tolerances, right after it was built:
    wrong numbers here are onnx2tf's (or its mode's), and no TFLite conversion can mend them.
    Decides how each output is laid out (the TFLite files share the TF model's layout)."""
    if len(tf_outputs) != len(reference):
        return saved, ConversionError(FailureKind.SHAPE_MISMATCH, f"{TF_LABEL} has {len(tf_outputs)} outputs, "
                                                                  f"PyTorch returns {len(reference)}")
    perms = tuple(output_perm(ref, out) for ref, out in zip(reference, tf_outputs))
    back = [np.transpose(out, np.argsort(perm)) for out, perm in zip(tf_outputs, perms)]
    outputs = tuple(compare(name, ref, out, spec.tolerance_for(FP32, name))
                    for (name, _), ref, out in zip(saved.output_names, reference, back))
    saved = dataclasses.replace(saved, outputs=outputs, output_perms=perms)
    if not all(c.passed for c in export.outputs):
        return saved, None  # ONNX itself is off: that is the failure verdict() reports
    bad = next((c for c in outputs if not c.shape_ok), None) or next((c for c in outputs if not c.passed), None)
    if bad is None:
        return saved, None
    kind = FailureKind.NUMERIC_MISMATCH if bad.shape_ok else FailureKind.SHAPE_MISMATCH
    return saved, ConversionError(kind, bad.brief(TF_LABEL))


def verify(spec: ModelSpec, arrays, reference, saved: SavedModelResult, files: tuple[Deliverable, ...],
           threads: int, deploy: bool = True) -> tuple[VerifyResult, tuple[Deliverable, ...]]:
    start = time.perf_counter()
    checked: list[Deliverable] = []
    raw: dict[str, list[np.ndarray]] = {}
    for built in files:
        outputs = raw[built.recipe] = run_tflite(built.path, saved, arrays, threads)
        back = [np.transpose(out, np.argsort(perm)) for out, perm in zip(outputs, saved.output_perms)]
        checked.append(dataclasses.replace(built, outputs=tuple(
            compare(name, ref, out, spec.tolerance_for(built.recipe, name))
            for (name, _), ref, out in zip(saved.output_names, reference, back))))
    chosen = choose(spec.deliverables, checked)
    deployable, message = deploy_check(chosen.path, saved, arrays, raw[chosen.recipe]) if deploy else (True, "")
    return VerifyResult(deployable=deployable, deploy_message=message, seconds=time.perf_counter() - start), tuple(checked)


def verdict(export: ExportResult, saved: SavedModelResult, result: VerifyResult, deliverables: tuple[Deliverable, ...],
            tfl: TFLiteResult, requested: tuple[str, ...],
            allow_flex: bool) -> tuple[ConversionError | None, Deliverable, tuple[Fix, ...]]:
    """The first failed check (verdict.first_problem), the recipe delivered, and the fix when it was
    not the first asked for."""
    chosen = choose(requested, deliverables)
    problem = first_problem(export, saved, chosen, deployable=result.deployable, deploy_message=result.deploy_message,
                            flex_ops=tfl.flex_ops, allow_flex=allow_flex)
    return problem, chosen, (fallback_fixes(requested, deliverables, chosen) if problem is None else ())
