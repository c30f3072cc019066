"""The checks against PyTorch: onnx2tf's TF model right after it is built (check_tf), then every
TFLite file (one per recipe) in stage 5 (verify), on the seeded inputs.

Inputs are mapped by name (TFLite sorts them and prefixes `serving_default_`) and put
into the layout onnx2tf chose; outputs are compared in a fixed order: count, names,
shapes, then values. Each file is also run where it goes, in a process without TensorFlow (runtime_checks).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ..checks import MicroCheck, RuntimeCheck, worst
from ..failures import ConversionError, FailureKind, first_line, reraise_if_memory
from ..metrics import compare, judge_outputs
from ..protocol import build
from ..recipes import FP32, RECIPES
from ..results import Deliverable, ExportResult, Fix, SavedModelResult, TFLiteResult, VerifyResult
from ..signature import Signature, layouts
from ..spec import ModelSpec
from ..tflite_run import OutputsMismatch, run_sets, stacked, torch_layout
from ..verdict import choose, fallback_fixes, first_problem


def run_tflite(path: str, saved: SavedModelResult, arrays, threads: int) -> list[np.ndarray]:
    """The file on one set of sample inputs (PyTorch's layout); its outputs in the TF model's layout,
    dequantized where they are integers."""
    return run_tflite_sets(path, saved, [arrays], threads)[0]


def run_tflite_sets(path: str, saved: SavedModelResult, sets, threads: int) -> list[list[np.ndarray]]:
    """The file on each set of sample inputs, loaded once; outputs that are not the model's are a
    wrong conversion (shape_mismatch), not this recipe's verdict."""
    try:
        return run_sets(path, saved, sets, threads)
    except OutputsMismatch as exc:
        raise ConversionError(FailureKind.SHAPE_MISMATCH, str(exc)) from None


def runtime_checks(spec: ModelSpec, files: tuple[Deliverable, ...], saved: SavedModelResult, arrays, reference,
                   threads: int) -> tuple[tuple[RuntimeCheck, ...], tuple[Signature | None, ...]]:
    """Each file in a process that never imports TensorFlow (deploy.py): on the TFLite runtime with
    XNNPACK and with the reference kernels, its ops and invoke time; int8_io files on Micro too. The
    reference kernels' outputs are judged against PyTorch like the default ones (on `arrays`). With
    each check, the file's signature as the runtime read it there (None where it could not)."""
    from ..tflite_run import tf_layout_feed

    if not files:
        return (), ()
    work = Path(files[0].path).parent / "runtime_check"
    work.mkdir(exist_ok=True)
    try:
        np.savez(work / "inputs.npz", **tf_layout_feed(saved, arrays))
        job = {"inputs": str(work / "inputs.npz"), "outputs": str(work / "outputs.npz"), "threads": threads,
               "layouts": layouts(saved),
               "files": [{"recipe": d.recipe, "path": d.path, "micro": RECIPES[d.recipe].integer_io,
                          "agreement": min(c.tolerance for c in d.outputs) / 2 if d.outputs
                          else RECIPES[d.recipe].tolerance / 2} for d in files]}
        (work / "job.json").write_text(json.dumps(job))
        proc = subprocess.run([sys.executable, "-m", "converter.stages.deploy", str(work / "job.json")],
                              capture_output=True, text=True, timeout=1800, cwd=str(Path(__file__).resolve().parents[2]))
        try:
            report = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            dead = RuntimeCheck(False, f"the TFLite runtime process died (status {proc.returncode})")
            return tuple(dead for _ in files), tuple(None for _ in files)
        if report["tensorflow_imported"]:
            return (tuple(RuntimeCheck(False, "the runtime check imported tensorflow, so it proves nothing") for _ in files),
                    tuple(None for _ in files))
        with np.load(work / "outputs.npz") as found:
            outputs = {key: found[key] for key in found.files}
        return tuple(_judged_kernels(spec, _runtime(report["files"][d.recipe]), d.recipe, saved, reference, outputs)
                     for d in files), tuple(_signature(report["files"][d.recipe]) for d in files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _judged_kernels(spec: ModelSpec, check: RuntimeCheck, recipe: str, saved: SavedModelResult, reference,
                    outputs: dict) -> RuntimeCheck:
    """The reference kernels' outputs against PyTorch, judged as the file is (metrics.judge_outputs)."""
    if not check.runs or check.kernels_agree is False:
        return check
    found = []
    for (name, key), perm in zip(saved.output_names, saved.output_perms):
        out = outputs.get(f"{recipe}::reference::{key}")
        if out is None:
            return dataclasses.replace(check, kernels_agree=False, message=f"the reference kernels gave no output '{name}'")
        found.append(np.transpose(out, np.argsort(perm)))
    judged = judge_outputs(spec, recipe, [name for name, _ in saved.output_names], reference, found, samples=1)
    failing = [c for c in judged if not c.passed]
    if failing:
        return dataclasses.replace(check, kernels_agree=False,
                                   message=f"with the reference kernels, {worst(failing).brief(RECIPES[recipe].label)}")
    return dataclasses.replace(check, kernels_agree=True)


def _signature(found: dict) -> Signature | None:
    return build(Signature, found["signature"]) if found.get("signature") else None


def _runtime(found: dict) -> RuntimeCheck:
    micro = found.get("micro")
    return RuntimeCheck(
        runs=found["runs"], message=found.get("message", ""), kernels_agree=found.get("kernels_agree"),
        kernels_diff=found.get("kernels_diff"), ops=tuple((n, k) for n, k in found.get("ops", ())),
        flex_ops=tuple(found.get("flex_ops", ())), custom_ops=tuple(found.get("custom_ops", ())),
        invoke_ms=found.get("invoke_ms"), quantized_tensors=found.get("quantized_tensors"),
        micro=None if micro is None else MicroCheck(micro["runs"], micro.get("message", ""), micro.get("arena_bytes"),
                                                    micro.get("agrees")))


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


def verify(spec: ModelSpec, sets, saved: SavedModelResult, files: tuple[Deliverable, ...],
           threads: int, deploy: bool = True) -> tuple[VerifyResult, tuple[Deliverable, ...]]:
    """Every file on every verification set (`sets`: (inputs, PyTorch's outputs) pairs: the seeded
    sample, or the samples held out from calibration), then whether each runs where it goes."""
    start = time.perf_counter()
    reference = stacked([ref for _, ref in sets])
    checked: list[Deliverable] = []
    for built in files:
        try:
            runs = run_tflite_sets(built.path, saved, [arrays for arrays, _ in sets], threads)
        except ConversionError:
            raise  # its outputs are not the model's: the conversion is wrong, not this recipe
        except Exception as exc:  # XNNPACK that cannot prepare an int8 file: this recipe's verdict, not the model's
            reraise_if_memory(exc)
            print(f"--- {built.label} does not run here:", file=sys.stderr)
            traceback.print_exception(exc)
            checked.append(dataclasses.replace(built, runtime=RuntimeCheck(False, first_line(exc))))
            continue
        back = stacked([torch_layout(outputs, saved.output_perms) for outputs in runs])
        checked.append(dataclasses.replace(built, outputs=judge_outputs(
            spec, built.recipe, [name for name, _ in saved.output_names], reference, back, samples=len(sets))))
    if deploy:
        ran = tuple(d for d in checked if d.verified)
        found, signatures = runtime_checks(spec, ran, saved, sets[0][0], sets[0][1], threads)
        checks = {d.recipe: (check, signature) for d, check, signature in zip(ran, found, signatures)}
        checked = [dataclasses.replace(d, runtime=checks[d.recipe][0], signature=checks[d.recipe][1])
                   if d.recipe in checks else d for d in checked]
    chosen = choose(spec.deliverables, checked)
    runtime = chosen.runtime if chosen is not None else None
    deployable = runtime is None or runtime.ok
    return (VerifyResult(deployable=deployable, deploy_message="" if deployable else runtime.problem,
                         seconds=time.perf_counter() - start), tuple(checked))


def verdict(export: ExportResult, saved: SavedModelResult, result: VerifyResult, deliverables: tuple[Deliverable, ...],
            tfl: TFLiteResult, requested: tuple[str, ...],
            allow_flex: bool) -> tuple[ConversionError | None, Deliverable, tuple[Fix, ...]]:
    """The first failed check (verdict.first_problem), the recipe delivered, and the fix when it was
    not the first asked for."""
    chosen = choose(requested, deliverables)
    problem = first_problem(export, saved, chosen, deployable=result.deployable, deploy_message=result.deploy_message,
                            flex_ops=tfl.flex_ops, allow_flex=allow_flex)
    return problem, chosen, (fallback_fixes(requested, deliverables, chosen, tfl.refused) if problem is None else ())
