"""What each ingredient of the onnx2tf stage costs and saves, on one model (run by benchmark.py).

    .venv/bin/python benchmarks/ingredients.py MODEL_FILE OUT_DIR

Exports the model as the harness does, then converts that one ONNX graph with onnx2tf in each
way below and prints one JSON line per way (seconds, whether it converted, the float32 TFLite's
range-relative error against onnxruntime):

- `exported, non-strict`: onnx2tf without its onnxsim and without its strict mode, on the graph as
  exported (the harness's old "fast" mode);
- `onnxsim subprocesses, non-strict`: onnx2tf's own onnxsim (three subprocesses), non-strict;
- `prepared, non-strict`: the harness's graph preparation (onnxsim in-process, the rewrites), then
  onnx2tf non-strict: what the harness runs first;
- `prepared, strict`: the same graph with onnx2tf's strict-mode accuracy search.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WAYS = (("exported, non-strict", "exported", {"disable_strict_mode": True, "not_use_onnxsim": True}),
        ("onnxsim subprocesses, non-strict", "exported", {"disable_strict_mode": True}),
        ("prepared, non-strict", "prepared", {"disable_strict_mode": True, "not_use_onnxsim": True}),
        ("prepared, strict", "prepared", {"not_use_onnxsim": True}))


def main(model: Path, out: Path) -> int:
    import dataclasses

    import numpy as np

    from converter.discovery import discover
    from converter.metrics import compare
    from converter.stages import offline, savedmodel
    from converter.stages.export import export_onnx
    from converter.stages.fixes import pseudo_ops_for_graph
    from converter.stages.graph import prepare, run_onnxruntime
    from converter.stages.load import load_model, make_inputs, run_torch
    from converter.stages.tflite import to_tflite
    from converter.stages.verify import output_perm, run_tflite

    offline.install()
    out.mkdir(parents=True, exist_ok=True)
    (case,) = [c for c in discover([model.parent]) if c.path.name == model.name]
    spec = dataclasses.replace(case.spec, deliverables=("fp32",))
    loaded = load_model(spec)
    arrays = make_inputs(loaded.inputs, spec.seed)
    reference, structure = run_torch(loaded, arrays)
    names = list(spec.output_names) or list(structure.names)
    export = export_onnx(spec, loaded, arrays, reference, out / "model.onnx", names, 2,
                         flatten=structure.needs_flattening)
    del loaded
    start = time.perf_counter()
    graph, fixes = prepare(Path(export.onnx_path), out / "prepared.onnx")
    prepared_s = time.perf_counter() - start
    print(json.dumps({"way": "graph preparation", "seconds": round(prepared_s, 2), "simplify_seconds":
                      graph.simplify_seconds, "nodes": [graph.nodes_before, graph.nodes_after],
                      "rewrites": [f.label for f in fixes], "strict_reason": graph.strict_reason}), flush=True)
    inputs = [i.name for i in spec.inputs]
    _, onnx_outputs = run_onnxruntime(Path(export.onnx_path), inputs, arrays, 2)
    for label, which, options in WAYS:
        savedmodel.ONNX2TF_MODES[label] = options
        graph_path = Path(export.onnx_path) if which == "exported" else out / "prepared.onnx"
        pseudo = tuple(f.detail for f in pseudo_ops_for_graph(graph_path, ()))
        row = {"way": label}
        start = time.perf_counter()
        try:
            saved, _ = savedmodel.to_savedmodel(spec, graph_path, inputs, export.input_shapes, names,
                                             out / label.replace(",", "").replace(" ", "_"), pseudo_ops=pseudo,
                                             mode=label)
            row["onnx2tf_s"] = round(time.perf_counter() - start, 2)
            _, files = to_tflite(spec, Path(saved.path), Path(saved.path).parent)
            outputs = run_tflite(files[0].path, saved, arrays, 2)
            errors = [compare("o", r, np.transpose(o, np.argsort(output_perm(r, o))), 1e-4).range_rel_err
                      for r, o in zip(onnx_outputs, outputs)]
            row.update(converted=True, fp32_err=max(errors))
        except BaseException as exc:  # onnx2tf also gives up with SystemExit
            row.update(converted=False, onnx2tf_s=round(time.perf_counter() - start, 2),
                       error=traceback.format_exception_only(type(exc), exc)[-1].strip()[:200])
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
