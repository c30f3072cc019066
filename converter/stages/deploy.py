"""Deployability check, run as its own process: `python -m converter.stages.deploy MODEL.tflite`.

On a phone there is no TensorFlow, only the TFLite runtime. ai_edge_litert runs Flex
kernels whenever tensorflow is imported in the same process, so this check must run in a
process that never imports it. Prints one JSON line.
"""
from __future__ import annotations

import json
import sys


def check(path: str) -> dict:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        ok, error = all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"), ""
        if not ok:
            error = "outputs on zero inputs are not finite"
    except Exception as exc:  # any runtime refusal is the answer we are after
        ok, error = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return {"ok": ok, "error": error, "tensorflow_imported": "tensorflow" in sys.modules}


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
