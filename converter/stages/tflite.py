"""Stage 4: SavedModel -> TFLite: the dynamic-range-quantized deliverable and a float32 twin.

The float32 model tells conversion error (onnx2tf / TFLite) apart from quantization error.
Builtin ops only unless the spec allows Flex (SELECT_TF_OPS), which then gets reported.
"""
from __future__ import annotations

import gc
import re
import time
from pathlib import Path

from ..failures import ConversionError, FailureKind, reraise_if_memory
from ..protocol import write_bytes_atomic
from ..results import TFLiteResult
from ..spec import ModelSpec

_TF_OP = re.compile(r"\btf\.([A-Z]\w+)")


def _convert(saved_model: Path, *, quantize: bool, allow_flex: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    return converter.convert()


def op_names(model: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [d["op_name"] for d in Interpreter(model_content=model)._get_ops_details()]


def flex_ops_of(model: bytes) -> tuple[str, ...]:
    return tuple(sorted({n for n in op_names(model) if n.startswith("Flex")}))


def to_tflite(spec: ModelSpec, saved_model: Path, out_dir: Path) -> TFLiteResult:
    start = time.perf_counter()
    sizes, flex = {}, ()
    paths = {label: out_dir / f"model_{label}.tflite" for label in ("fp32", "drq")}
    for label, quantize in (("fp32", False), ("drq", True)):
        try:
            model = _convert(saved_model, quantize=quantize, allow_flex=spec.allow_flex)
        except Exception as exc:
            reraise_if_memory(exc)
            text = str(exc)
            needed = sorted(set(_TF_OP.findall(text)))
            if not spec.allow_flex and ("Select TF ops" in text or "flex" in text.lower()) and needed:
                raise ConversionError(
                    FailureKind.FLEX_OPS,
                    f"needs TensorFlow ops that TFLite builtins lack ({', '.join(needed)}); "
                    "set allow_flex = true to ship a Flex model (bigger runtime), or replace the "
                    "ops (e.g. pseudo_ops = [\"erf\"] for exact GELU)", ops=tuple(needed)) from exc
            lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines() or [""]
            raise ConversionError(FailureKind.TFLITE_ERROR,
                                  f"TFLiteConverter ({label}): {type(exc).__name__}: {lines[0].strip()}") from exc
        write_bytes_atomic(paths[label], model)  # on disk, not in memory during the next conversion
        sizes[label] = len(model)
        flex = flex_ops_of(model) if label == "drq" else ()
        del model
        gc.collect()
    return TFLiteResult(
        drq_path=str(paths["drq"]), fp32_path=str(paths["fp32"]),
        drq_bytes=sizes["drq"], fp32_bytes=sizes["fp32"], flex_ops=flex,
        seconds=time.perf_counter() - start)
