"""Does each TFLite file run where it goes? Run as its own process:
`python -m converter.stages.deploy JOB.json` (prints one JSON line).

On a phone there is no TensorFlow, only the TFLite runtime. ai_edge_litert runs Flex kernels
whenever tensorflow is imported in the same process, so these checks run in a process that never
imports it. Per file: it runs on the sample inputs with the runtime's default kernels (XNNPACK
where it applies, what a phone runs) and with the reference kernels (what runs where XNNPACK does
not), whose outputs the caller judges against PyTorch like the default ones (two valid kernels of
a quantized op differ by about its quantization error, so they are not compared with each other);
its signature is read as the device sees it (signature.py); the ops it uses are counted; its median invoke time is
measured (a figure, never gated); an int8_io file also runs on TensorFlow Lite Micro (micro.py,
a process of its own: a Micro crash is a finding, not this process's end).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..recipes import RECIPES

TIMED_RUNS = 10
# per file: a large model is timed fewer times, never for long (at 2 s, ConvNeXt-tiny's timed runs
# took 2 s of its 3.6 s verify stage)
TIMING_BUDGET_S = 0.5


def quantized_tensors(interpreter, recipe: str) -> int | None:
    """The tensors a recipe's quantization makes (Recipe.quantized_dtype): none of them means
    nothing was quantized (TFLite leaves weights under 1024 elements in float32 under DRQ, so a
    tiny model's DRQ file is its float32 one); None for a recipe that quantizes nothing."""
    dtype = RECIPES[recipe].quantized_dtype if recipe in RECIPES else None
    if dtype is None:
        return None
    return sum(1 for t in interpreter.get_tensor_details() if getattr(t["dtype"], "__name__", str(t["dtype"])) == dtype)


def _ops(interpreter) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    names = [d["op_name"] for d in interpreter._get_ops_details()]
    counts = collections.Counter(names).most_common()
    flex = sorted({n for n in names if n.startswith("Flex")})
    custom = sorted({n for n in names if not n.startswith("Flex") and not n.replace("_", "").isupper()})
    return counts, flex, custom


def _spread(arrays) -> float:
    import numpy as np

    finite = [a[np.isfinite(a)] for a in arrays]
    values = np.concatenate([f.ravel().astype(np.float64) for f in finite]) if finite else np.zeros(1)
    return float(np.ptp(values)) if values.size else 0.0


def _difference(first: dict, second: dict) -> float:
    """The largest difference between two runs' outputs, relative to each output's range."""
    import numpy as np

    worst = 0.0
    for key, a in first.items():
        b = second[key]
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        both = np.isfinite(a) & np.isfinite(b)
        if both.any():
            spread = max(_spread([a]), 1e-12)
            worst = max(worst, float(np.abs(a[both].astype(np.float64) - b[both]).max()) / spread)
    return worst


def _micro(path: str, feed: dict, interpreter, runner, work: Path) -> dict:
    """TensorFlow Lite Micro on the file, its inputs in the subgraph's order."""
    import numpy as np

    by_index = {d["index"]: key for key, d in runner.get_input_details().items()}
    order = [by_index[d["index"]] for d in interpreter.get_input_details()]
    out_by_index = {d["index"]: key for key, d in runner.get_output_details().items()}
    out_order = [out_by_index[d["index"]] for d in interpreter.get_output_details()]
    np.savez(work / "micro_inputs.npz", *[feed[k] for k in order])
    proc = subprocess.run([sys.executable, "-m", "converter.stages.micro", path, str(work / "micro_inputs.npz"),
                           str(work / "micro_outputs.npz"), str(len(out_order))], capture_output=True, text=True, timeout=600,
                          cwd=str(Path(__file__).resolve().parents[2]))
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"runs": False, "message": f"the TensorFlow Lite Micro process died (status {proc.returncode})"}
    if report.get("runs"):
        with np.load(work / "micro_outputs.npz") as found:
            report["outputs"] = {key: found[f"arr_{i}"] for i, key in enumerate(out_order)}
    return report


def check_file(path: str, recipe: str, feed: dict, threads: int, agreement: float, micro: bool,
               work: Path, layouts: dict[str, str] | None = None) -> tuple[dict, dict, dict]:
    """One file's runtime check, and its outputs with the default and with the reference kernels
    (keyed by signature output). `agreement`: how far Micro's outputs may be from the runtime's;
    `layouts`: each signature key's layout, for the signature the file declares."""
    from .. import signature
    from ..tflite_run import interpreter as open_interpreter
    from ..tflite_run import run_signature

    report: dict = {"runs": False}
    try:
        interpreter = open_interpreter(path, threads)
        report["signature"] = dataclasses.asdict(signature.read(interpreter, layouts))
        counts, flex, custom = _ops(interpreter)
        report.update(ops=counts, flex_ops=flex, custom_ops=custom,
                      quantized_tensors=quantized_tensors(interpreter, recipe))
        runner = interpreter.get_signature_runner("serving_default")
        outputs = run_signature(runner, feed)
    except Exception as exc:  # any runtime refusal is the answer we are after
        text = str(exc).strip()
        report["message"] = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        return report, {}, {}
    report["runs"] = True
    times = []
    budget = time.perf_counter() + TIMING_BUDGET_S
    while len(times) < TIMED_RUNS and (not times or time.perf_counter() < budget):
        start = time.perf_counter()
        run_signature(runner, feed)
        times.append((time.perf_counter() - start) * 1000)
    report["invoke_ms"] = round(statistics.median(times), 3)
    reference: dict = {}
    try:
        reference = run_signature(open_interpreter(path, threads, reference_kernels=True)
                                  .get_signature_runner("serving_default"), feed)
        report["kernels_diff"] = _difference(outputs, reference)
    except Exception as exc:
        report.update(kernels_agree=False, message=f"the reference kernels fail: {type(exc).__name__}: {exc}")
    if micro:
        found = _micro(path, feed, interpreter, runner, work)
        micro_outputs = found.pop("outputs", None)
        if micro_outputs is not None:
            diff = _difference(outputs, micro_outputs)
            found["agrees"] = diff <= agreement
            if diff > agreement:
                found["message"] = f"its outputs differ from the TFLite runtime's by {diff:.3g} of an output's range"
        report["micro"] = found
    return report, outputs, reference


def main(job_path: str) -> dict:
    import numpy as np

    job = json.loads(Path(job_path).read_text())
    work = Path(job_path).parent
    with np.load(job["inputs"]) as data:
        feed = {key: data[key] for key in data.files}
    reports, outputs = {}, {}
    for item in job["files"]:
        reports[item["recipe"]], found, reference = check_file(item["path"], item["recipe"], feed, job["threads"],
                                                               item["agreement"], item["micro"], work,
                                                               job.get("layouts"))
        outputs.update({f"{item['recipe']}::{key}": value for key, value in found.items()})
        outputs.update({f"{item['recipe']}::reference::{key}": value for key, value in reference.items()})
    np.savez(job["outputs"], **outputs)
    return {"files": reports, "tensorflow_imported": "tensorflow" in sys.modules}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
