"""Where a float32 conversion first departs, or why no converter can do better (child side).

Runs when wrong numbers fail a model (the TF model onnx2tf built, a TFLite file whose float32 twin
is wrong too, or the ONNX file itself), in a process of its own (`python -m
converter.stages.diagnose JOB.json`) that the conversion child watches (under engine auto, the parent,
once the litert engine has failed too: converter/diagnosis_run.py): it gets at most
`diagnosis_share` of the model's timeout and of the memory its ceiling leaves, and what it found by
then is kept when it is stopped (and says so). In that process:

0. **Precision.** PyTorch runs the model again in float64: if its own float32 outputs are about as
   far from those as the converted ones are from them (an output with a tiny range, or a large value
   subtracted), the tolerance asks more than float32 gives, and no converter can meet it.
1. **Which tool.** The TF model onnx2tf built (the SavedModel) runs on the sample inputs: if it
   already differs from PyTorch, onnx2tf converted it wrongly; if it matches, the TFLite converter
   changed the numbers. This is decided on the final outputs, where no layout is in doubt.
2. **Which node.** onnx2tf runs once more, comparing every ONNX node's output in its TF model with
   onnxruntime (`check_onnx_tf_outputs_elementwise_close_full`); its comparison function is wrapped
   to keep both tensors, and each node is judged here against its own range. onnx2tf's own
   verdict is not used: it accepts any transposition that matches, so a square tensor ([1, 64, 64]:
   SegFormer's 64 tokens of 64 channels) normalised over the wrong axis reads as a match.
3. **Which TFLite op** (when the TF model is right): the float32 TFLite file runs with every tensor
   kept (`experimental_preserve_all_tensors`), and each op's output is compared, in execution order,
   with the TF model's tensor of the same name (TFLite names a fused op after all it fused).

Stops at the first tensor it can prove departs; square tensors before it, whose layout no shape
shows, are named as where it may really start.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..diagnosis_run import FOUND, prepare
from ..metrics import scale_of
from ..protocol import plain, write_json_atomic, write_text_atomic
from ..results import Divergence, NodeError

PRECISION_FACTOR = 10  # a converted error up to this many times PyTorch's own float32 error is float32's
# one float32 op computed two ways differs by ~1e-7 of its scale: a tensor off by more departs, even
# where the output's own tolerance is wider (a cancellation later on can blow 1 % into 1000 %)
TENSOR_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class DiagnosisJob:
    onnx_path: str           # the graph onnx2tf converted
    saved_model: str
    tflite_fp32: str
    input_names: list[str]   # ONNX input names, in order
    input_keys: list[str]    # their TF signature names
    input_perms: list[list[int]]   # torch layout -> TF layout
    output_keys: list[str]
    output_perms: list[list[int]]  # TF layout of each output, relative to PyTorch's
    keep: list[str]
    pseudo_ops: list[str]
    mode: str
    tolerance: float
    work_dir: str
    spec: dict | None = None  # the model's ModelSpec, to run PyTorch itself in float64
    observed: float = 0.0     # the range-relative error that failed the model
    steps: tuple[str, ...] = ("precision", "convert")  # "convert": find where onnx2tf / TFLite depart


# --- the conversion child's side ------------------------------------------------------------

def run_bounded(job: DiagnosisJob, arrays, reference, *, seconds: float, memory_mb: float, share: float = 0.25,
                threads: int = 1) -> Divergence | None:
    """The diagnosis in its own process, stopped at `seconds` or `memory_mb`; what it found by then."""
    from ..isolation import run_diagnosis

    prepare(job, arrays, reference)
    divergence, _ = run_diagnosis(Path(job.work_dir), seconds=seconds, memory_mb=memory_mb, share=share, threads=threads)
    return divergence


# --- the diagnosis process --------------------------------------------------------------------

def _range_rel(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, range, error / range), the range falling back as in metrics.compare."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if not reference.size:
        return 0.0, 0.0, 0.0
    max_abs = float(np.abs(reference - candidate).max())
    spread = float(np.ptp(reference))
    return max_abs, spread, max_abs / scale_of(reference, spread)


def _layouts(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The layouts a TF tensor may have relative to ONNX's: as is, or channels-last (3-5-D)."""
    rank = len(shape)
    perms = [tuple(range(rank))]
    if 3 <= rank <= 5:
        perms.append((0, *range(2, rank), 1))
    return perms


def compare_tensor(node: str, op_type: str, output: str, reference, candidate, layouts: bool = True) -> NodeError:
    """The candidate against the reference in the layout their shapes imply (`layouts`: the candidate
    may be channels-last); where both layouts fit the shape (a square tensor), the better one,
    marked ambiguous."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    shape = tuple(reference.shape)
    if reference.dtype.kind != "f" or reference.size == 0 or candidate.size != reference.size:
        return NodeError(node, op_type, output, shape, None, None, None)
    perms = _layouts(shape) if layouts else [tuple(range(len(shape)))]
    fits = [p for p in perms if tuple(reference.shape[i] for i in p) == tuple(candidate.shape)]
    if not fits:
        return NodeError(node, op_type, output, shape, None, None, None)
    best = min((_range_rel(np.transpose(reference, p), candidate) for p in fits), key=lambda e: e[2])
    ambiguous = len(fits) > 1 and sum(d > 1 for d in shape) > 1
    return NodeError(node, op_type, output, shape, best[0], best[1], best[2], ambiguous)


def _sanitized(name: str) -> str:
    """How onnx2tf renames tensors for a SavedModel (no leading '/', no ':')."""
    return re.sub("^/", "wa/", name.replace(":", "_"))


def _producers(onnx_path: Path) -> dict[str, tuple[str, str]]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    found = {}
    for node in graph.node:
        for out in node.output:
            found[out] = found[_sanitized(out)] = (node.name or out, node.op_type)
    return found


def _write(work: Path, found: Divergence, rows: list[NodeError]) -> None:
    write_json_atomic(work / "node_errors.json", [plain(dataclasses.asdict(r)) for r in rows])
    write_text_atomic(work / "node_errors.md", _markdown(found, rows))
    write_json_atomic(work / FOUND, plain(dataclasses.asdict(found)))


def _tf_outputs(job: DiagnosisJob, arrays) -> list[np.ndarray]:
    import tensorflow as tf

    function = tf.saved_model.load(job.saved_model).signatures["serving_default"]
    feed = {key: tf.constant(np.ascontiguousarray(np.transpose(a, perm)))
            for key, perm, a in zip(job.input_keys, job.input_perms, arrays)}
    outputs = function(**feed)
    return [np.transpose(outputs[key].numpy(), np.argsort(perm)) for key, perm in zip(job.output_keys, job.output_perms)]


def _onnx_and_tf_tensors(job: DiagnosisJob, arrays, work: Path) -> dict:
    """{(onnx tensor, tf tensor): (onnxruntime's value, the TF model's)} from one onnx2tf run."""
    from .savedmodel import onnx2tf_options, prepare_onnx2tf

    converter = prepare_onnx2tf()
    copy = work / "onnx2tf_input.onnx"
    shutil.copyfile(job.onnx_path, copy)
    custom = []
    for name, array, perm in zip(job.input_names, arrays, job.input_perms):
        path = work / f"input_tf_{len(custom)}.npy"
        np.save(path, np.transpose(array, perm))  # onnx2tf reads them in its own (TF) layout
        custom.append([name, str(path), 0.0, 1.0])
    captured: dict = {}
    validate = converter.onnx_tf_tensor_validation

    def keep(**kwargs):
        captured.update(kwargs["output_pairs"])
        return validate(**kwargs)

    converter.onnx_tf_tensor_validation = keep
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its colour table; the numbers are kept above
            converter.convert(**onnx2tf_options(copy, work / "onnx2tf_out", job.keep, job.pseudo_ops, job.mode),
                              check_onnx_tf_outputs_elementwise_close_full=True,
                              custom_input_op_name_np_data_path=custom)
    finally:
        converter.onnx_tf_tensor_validation = validate
    return captured


def _first(rows: list[NodeError], tolerance: float) -> tuple[NodeError | None, str | None]:
    ambiguous = None
    for row in rows:
        if row.range_rel_err is None:
            continue
        if row.range_rel_err > tolerance:
            return row, ambiguous
        if row.ambiguous and ambiguous is None:
            ambiguous = row.node
    return None, None


def _tflite_rows(job: DiagnosisJob, arrays, tf_values: dict[str, np.ndarray], tolerance: float) -> list[NodeError]:
    """Each TFLite op's output against the TF tensor of its name, in execution order, to the first
    that departs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=job.tflite_fp32, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    by_key = {f"serving_default_{key}:0": (a, perm) for key, a, perm in zip(job.input_keys, arrays, job.input_perms)}
    for detail in interpreter.get_input_details():
        array, perm = by_key[detail["name"]]
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(np.transpose(array, perm)).astype(detail["dtype"]))
    interpreter.invoke()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    rows = []
    for op in interpreter._get_ops_details():  # checked against ai-edge-litert 2.1.0: execution order
        for index in op["outputs"]:
            if index < 0:
                continue
            name = tensors[index]["name"]
            value = interpreter.get_tensor(index)
            # "model_3/tf.math.multiply_3/Mul;model_3/tf.reshape_4/Reshape": each fused op's TF tensor
            candidates = [part.split("/", 1)[1] for part in name.split(";") if "/" in part]
            compared = [compare_tensor(name, op["op_name"], key, tf_values[key], value, layouts=False)
                        for key in candidates if key in tf_values]
            compared = [c for c in compared if c.range_rel_err is not None]
            if not compared:
                continue
            best = min(compared, key=lambda c: c.range_rel_err)
            rows.append(best)
            if best.range_rel_err > tolerance:
                return rows
    return rows


def float64_error(job: DiagnosisJob, arrays, reference) -> float | None:
    """How far PyTorch's own float32 outputs are from float64 (the model run again in double
    precision), relative to the output range; None where the model does not run in float64."""
    import torch

    from ..spec import ModelSpec
    from .load import load_model, run_torch, torch_callable

    try:
        loaded = load_model(ModelSpec.from_dict(job.spec))
        module = torch_callable(loaded).double()
        doubled = dataclasses.replace(loaded, module=module, format="torchscript")  # run as it is now
        inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in arrays]
        with torch.no_grad():
            exact, _ = run_torch(doubled, inputs, dtype=torch.float64)
    except Exception as exc:  # a model with float32 baked in (a TorchScript constant): no verdict on precision
        print(f"--- the model does not run in float64: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return max(_range_rel(e, r)[2] for e, r in zip(exact, reference))


def diagnose(job: DiagnosisJob) -> None:
    work = Path(job.work_dir)
    arrays = [np.load(work / f"input_{i}.npy") for i in range(len(job.input_names))]
    reference = [np.load(p) for p in sorted(work.glob("reference_*.npy"), key=lambda p: int(p.stem.split("_")[1]))]
    table = str(work / "node_errors.md")
    if "precision" in job.steps and job.spec is not None:
        precision = float64_error(job, arrays, reference)
        # PyTorch's own float32 result is about as far from the exact one as the converted one is from
        # it: the tolerance asks more than float32 gives, and no converter can be held to it
        if precision is not None and precision > job.tolerance / 2 and job.observed <= PRECISION_FACTOR * precision:
            found = Divergence("precision", None, job.tolerance, 0, table, float64_error=precision)
            _write(work, found, [])
            return
        if "convert" not in job.steps:
            _write(work, Divergence("export", None, job.tolerance, 0, table, float64_error=precision), [])
            return
    else:
        precision = None
    tf_error = max(_range_rel(r, o)[2] for r, o in zip(reference, _tf_outputs(job, arrays)))
    where = "onnx2tf" if tf_error > job.tolerance else "tflite"
    found = Divergence(where, None, job.tolerance, 0, table, tf_error=tf_error, float64_error=precision)
    _write(work, found, [])  # a verdict on the tool already, if the budget runs out from here
    captured = _onnx_and_tf_tensors(job, arrays, work)
    producers = _producers(Path(job.onnx_path))
    if where == "onnx2tf":
        rows = [compare_tensor(*producers.get(onnx_name, (onnx_name, "?")), onnx_name, onnx_value, tf_value)
                for (onnx_name, _), (onnx_value, tf_value) in captured.items()]
    else:
        tf_values = {tf_name.split(":")[0]: tf_value for (_, tf_name), (_, tf_value) in captured.items()}
        del captured
        rows = _tflite_rows(job, arrays, tf_values, min(job.tolerance, TENSOR_TOLERANCE))
    first, ambiguous = _first(rows, min(job.tolerance, TENSOR_TOLERANCE))
    found = dataclasses.replace(found, first=first, ambiguous_before=ambiguous, tolerance=min(job.tolerance, TENSOR_TOLERANCE),
                                nodes_compared=sum(r.range_rel_err is not None for r in rows))
    _write(work, found, rows)


def _markdown(found: Divergence, rows: list[NodeError]) -> str:
    against = "the TF model" if found.where == "tflite" else "onnxruntime"
    candidate = "TFLite op output" if found.where == "tflite" else "TF model's output"
    lines = [f"# Where the float32 conversion departs: {found.where}", "", found.describe(), "",
             f"Each {candidate} against {against} on the seeded sample inputs; error = max |difference| / range of "
             f"the reference; tolerance {found.tolerance:g}. `square`: the shape reads the same in both layouts "
             "(compared in the better one).", "",
             "| # | node or tensor | op | output | shape | max abs err | range | range-relative | |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        mark = "FIRST DIVERGENCE" if r is found.first else ("over" if (r.range_rel_err or 0) > found.tolerance else "")
        mark = (mark + " square").strip() if r.ambiguous else mark
        cells = [str(i), r.node, r.op_type, r.output, "x".join(map(str, r.shape)) or "scalar",
                 *("-" if v is None else f"{v:.3g}" for v in (r.max_abs_err, r.output_range, r.range_rel_err)), mark]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(job_path: str, *guardians: str) -> int:
    """`python -m converter.stages.diagnose JOB.json GUARDIAN_PID...` (diagnosis_run.command)."""
    from .. import lifeline
    from . import offline

    # dies with the process that started it (and, run from the harness itself, with the xdist controller)
    lifeline.hold([int(pid) for pid in guardians] or [os.getppid()])
    offline.install()
    scratch = Path(job_path).parent / "tmp"  # TensorFlow's autograph files: this process's own, removed with it
    scratch.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(scratch)
    try:
        diagnose(DiagnosisJob(**json.loads(Path(job_path).read_text())))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
