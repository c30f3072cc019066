"""The workflow the harness replaces, reproduced for comparison: one process per model.

    .venv/bin/python benchmarks/original_workflow.py MODEL OUT_DIR [SHAPE[:DTYPE] ...]

torch.onnx.export at opset 17 (torch's default exporter; the legacy one if that raises) ->
onnx2tf's default run (its SavedModel and its own float32/float16 .tflite files) ->
TFLiteConverter.from_saved_model with Optimize.DEFAULT (dynamic-range quantization). The only
change: onnx2tf's download of calibration images is replaced by zeros, as in the harness,
because this machine is offline (it does not change the conversion). Prints one JSON line.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(model: str, out: str, shapes: list[str]) -> None:
    start = time.perf_counter()
    seconds = {}
    import torch

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = []
    for text in shapes:
        shape, _, dtype = text.partition(":")
        dims = [int(d) for d in shape.split(",")]
        args.append(torch.ones(dims, dtype=torch.int64) if dtype == "int64" else torch.randn(dims))
    if model.endswith(".pt2"):  # the benchmark's own file: its example inputs give the shapes
        program = torch.export.load(model)
        module, args = program.module(), args or list(program.example_inputs[0])
    else:
        module = torch.jit.load(model)
    onnx_path = str(out_dir / "model.onnx")
    t = time.perf_counter()
    try:
        torch.onnx.export(module, tuple(args), onnx_path, opset_version=17)
        exporter = "default"
    except Exception:
        torch.onnx.export(module, tuple(args), onnx_path, opset_version=17, dynamo=False)
        exporter = "legacy"
    seconds["export"] = time.perf_counter() - t

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from converter.stages.savedmodel import prepare_onnx2tf  # offline calibration data only

    onnx2tf = prepare_onnx2tf()
    t = time.perf_counter()
    onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=str(out_dir / "saved_model"))
    seconds["onnx2tf"] = time.perf_counter() - t

    import tensorflow as tf

    t = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(out_dir / "saved_model"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    (out_dir / "model_drq.tflite").write_bytes(converter.convert())
    seconds["tflite"] = time.perf_counter() - t
    print(json.dumps({"exporter": exporter, "seconds": seconds, "total": time.perf_counter() - start}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
