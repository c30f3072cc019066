"""An int8_io file on TensorFlow Lite Micro's interpreter, as its own process:
`python -m converter.stages.micro MODEL.tflite IN.npz OUT.npz OUTPUTS` (prints one JSON line).

Micro has no signatures: inputs go in the subgraph's order (IN.npz's arr_0, arr_1, ...), float
samples quantized with each input's own scale and zero point, outputs dequantized. The arena the
interpreter allocated is what a device must reserve; Micro reports it only on the C stderr
(`print_allocations`), so that is read from a file standing in for fd 2. An op Micro lacks is
named from its own message ("Didn't find op for builtin opcode 'RFFT2D'"). A crash in Micro kills
only this process, which the caller then reports.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile

ARENA = re.compile(r"Arena allocation total (\d+) bytes")
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
FAILED_NODE = re.compile(r"Node (\w+) \(number \d+\) failed to (?:prepare|invoke)")


@contextlib.contextmanager
def c_stderr():
    """What the C++ side writes to fd 2 while the block runs, read back afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        text = []
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read().decode("utf-8", "replace"))


def run(model_path: str, inputs_path: str, outputs_path: str, n_outputs: int) -> dict:
    import numpy as np

    from ..tflite_run import dequantize, quantize

    try:
        from tflite_micro import runtime
    except ImportError as exc:
        return {"runs": False, "message": f"the tflite-micro package is not installed here ({exc})"}
    with open(model_path, "rb") as fh:
        model = fh.read()
    with np.load(inputs_path) as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    with c_stderr() as said:
        try:
            interpreter = runtime.Interpreter.from_bytes(
                model, intrepreter_config=runtime.InterpreterConfig.kAllocationRecording)  # sic: tflite-micro's name
            for i, array in enumerate(arrays):
                interpreter.set_input(quantize(array, interpreter.get_input_details(i)), i)
            interpreter.invoke()
            outputs = [dequantize(interpreter.get_output(i), interpreter.get_output_details(i))
                       for i in range(n_outputs)]
            interpreter.print_allocations()
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    text = said[0] if said else ""
    if error is not None:
        missing = sorted(set(MISSING_OP.findall(text)))
        if not missing and "CUSTOM" in text:
            missing = ["a custom op"]
        reason = f"it lacks the op(s) {', '.join(missing)}" if missing else error
        node = FAILED_NODE.search(text)
        if not missing and node:  # an op Micro has, refusing this use of it: Micro's own line says why
            lines = [ln.strip() for ln in text[:node.start()].strip().splitlines() if ln.strip()]
            reason = f"its {node.group(1)} op fails to prepare" + (f" ({lines[-1]})" if lines else "")
        return {"runs": False, "message": reason}
    np.savez(outputs_path, *outputs)
    arena = ARENA.search(text)
    return {"runs": True, "arena_bytes": int(arena.group(1)) if arena else None}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
