"""Deployability check, run as its own process: `python -m converter.stages.deploy MODEL.tflite IN.npz OUT.npz`.

On a phone there is no TensorFlow, only the TFLite runtime. ai_edge_litert runs Flex
kernels whenever tensorflow is imported in the same process, so this check must run in a
process that never imports it. Prints one JSON line.
"""
from __future__ import annotations

import json
import sys


def check(path: str, inputs: str, outputs: str) -> dict:
    """Run the model on the inputs (an .npz keyed by signature input), write its outputs (keyed by
    signature output) to `outputs`."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_path=path, num_threads=1).get_signature_runner("serving_default")
        with np.load(inputs) as feed:
            result = runner(**{key: feed[key] for key in feed.files})
        np.savez(outputs, **result)
        ok, error = True, ""
    except Exception as exc:  # any runtime refusal is the answer we are after
        ok, error = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return {"ok": ok, "error": error, "tensorflow_imported": "tensorflow" in sys.modules}


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1], sys.argv[2], sys.argv[3])))
