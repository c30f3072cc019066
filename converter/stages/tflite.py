"""Stage 4: SavedModel -> TFLite: one file per requested recipe (recipes.py).

Each conversion costs seconds and, on a 114 MB ConvNeXt-tiny, 1.2 GB: only what was asked for is
built (the TF model's own float32 check tells onnx2tf's errors apart; a float32 TFLite file is
built later only to explain a recipe that misses its tolerance). Builtin ops only unless the spec
allows Flex (SELECT_TF_OPS), which then gets reported.
"""
from __future__ import annotations

import functools
import gc
import re
import sys
import time
import traceback
from pathlib import Path

from ..failures import ConversionError, FailureKind, reraise_if_memory
from ..protocol import write_bytes_atomic
from ..recipes import FP32, RECIPES, calibrated
from ..results import Deliverable, Refusal, TFLiteResult
from ..spec import ModelSpec

_TF_OP = re.compile(r"\btf\.([A-Z]\w+)")


def _float32(converter, tf, calibration) -> list:
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _float16(converter, tf, calibration) -> list:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _dynamic_range(converter, tf, calibration) -> list:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return [tf.lite.OpsSet.TFLITE_BUILTINS]


def _full_integer(converter, tf, calibration) -> list:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(calibration)  # dicts keyed by signature input
    return [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # an op without an int8 kernel fails, naming it


def _full_integer_io(converter, tf, calibration) -> list:
    ops = _full_integer(converter, tf, calibration)
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return ops


# how the TFLite converter is set for each recipe of recipes.RECIPES (returns its op sets)
CONVERTER_SETTINGS = {FP32: _float32, "fp16": _float16, "drq": _dynamic_range, "int8": _full_integer,
                      "int8_io": _full_integer_io}
assert set(CONVERTER_SETTINGS) == set(RECIPES), "every recipe needs its converter settings"


@functools.cache  # one class per process, like TensorFlow's own
def _saved_model_converter():
    """TFLiteConverter.from_saved_model's converter, built for the one signature savedmodel.py writes,
    minus two loads of the whole SavedModel into this process: from_saved_model's, to list its
    signatures, and convert()'s, only to read its debug info (none is written); benchmarks/README.md
    has what that saves. TF 2.19's TFLiteSavedModelConverterV2.convert() is this minus that load. The
    MLIR converter reads the SavedModel from its folder either way."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata
    from tensorflow.lite.python.lite import TFLiteConverterBase, TFLiteSavedModelConverterV2

    TFLiteConverterBase._set_original_model_type(metadata.ModelType.TF_SAVED_MODEL)  # as from_saved_model records it

    class Converter(TFLiteSavedModelConverterV2):
        def convert(self):
            return self._convert_and_export_metrics(Converter._convert_without_loading)

        def _convert_without_loading(self):
            graph_def, _, _ = self._load_saved_model(self.saved_model_dir, self._saved_model_tags)
            return self._convert_from_saved_model(graph_def)

    return Converter


def _convert(saved_model: Path, *, recipe: str, allow_flex: bool, calibration=(), calibrate_only: bool = False) -> bytes:
    import tensorflow as tf

    converter = _saved_model_converter()(str(saved_model), {tf.saved_model.SERVING}, ["serving_default"])
    if converter.saved_model_dir is None:  # TF could not read it as a SavedModel (from_saved_model would fall back)
        raise ConversionError(FailureKind.TFLITE_ERROR, f"TFLiteConverter cannot read the SavedModel at {saved_model}")
    ops = CONVERTER_SETTINGS[recipe](converter, tf, list(calibration))
    if allow_flex:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    converter._experimental_calibrate_only = calibrate_only  # the float model and its ranges, for a rebuild (selective.py)
    return converter.convert()


def calibrated_model(spec: ModelSpec, saved_model: Path, recipe: str, calibration) -> bytes:
    """The float model with the ranges `calibration` gave each tensor: what TensorFlow's quantizer
    makes the `recipe` (int8 / int8_io) file from, kept to rebuild it with chosen layers in float32."""
    return _convert(saved_model, recipe=recipe, allow_flex=spec.allow_flex, calibration=calibration, calibrate_only=True)


def op_names(model: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [d["op_name"] for d in Interpreter(model_content=model)._get_ops_details()]


def flex_ops_of(model: bytes) -> tuple[str, ...]:
    return tuple(sorted({n for n in op_names(model) if n.startswith("Flex")}))


def tflite_path(out_dir: Path, recipe: str) -> Path:
    return out_dir / f"model_{recipe}.tflite"


def to_tflite(spec: ModelSpec, saved_model: Path, out_dir: Path, calibration=(), calibration_note: str | None = None,
              random_calibration: bool = False) -> tuple[TFLiteResult, tuple[Deliverable, ...]]:
    """The TFLite file of every requested recipe, not yet verified. `calibration`: the int8 recipes'
    representative samples, each a dict keyed by signature input (the TF model's layout). A recipe
    the converter refuses is recorded with its words and the others are built (each recipe is
    judged on its own); ops that need Flex fail the conversion (a fix may replace them for every
    recipe), and so does a refusal of every recipe."""
    start = time.perf_counter()
    files, flex, refused, first_error = [], set(), [], None
    for label in spec.deliverables:
        if RECIPES[label].calibrated and not calibration:
            raise ConversionError(FailureKind.TFLITE_ERROR, f"{RECIPES[label].label} needs calibration samples")
        try:
            model = _convert(saved_model, recipe=label, allow_flex=spec.allow_flex,
                             calibration=calibration if RECIPES[label].calibrated else ())
        except Exception as exc:
            reraise_if_memory(exc)
            error = _refusal(label, exc, spec.allow_flex)
            if error.kind is FailureKind.FLEX_OPS:
                raise error from exc
            print(f"--- {RECIPES[label].label} could not be built: {error.message}", file=sys.stderr)
            traceback.print_exception(exc)
            refused.append(Refusal(label, error.message))
            first_error = first_error or error
            continue
        path = tflite_path(out_dir, label)
        write_bytes_atomic(path, model)  # on disk, not in memory during the next conversion
        files.append(Deliverable(label, str(path), len(model)))
        if spec.allow_flex:
            flex |= set(flex_ops_of(model))
        del model
        gc.collect()
    if not files:
        raise first_error
    used = calibrated(spec.deliverables)
    return TFLiteResult(flex_ops=tuple(sorted(flex)), seconds=time.perf_counter() - start,
                        calibration=calibration_note if used else None,
                        random_calibration=random_calibration and used, refused=tuple(refused)), tuple(files)


def _refusal(label: str, exc: Exception, allow_flex: bool) -> ConversionError:
    """The converter's refusal in one line: ops TFLite builtins lack (flex_ops), or its own error."""
    text = str(exc)
    needed = sorted(set(_TF_OP.findall(text)))
    if not allow_flex and ("Select TF ops" in text or "flex" in text.lower()) and needed:
        return ConversionError(
            FailureKind.FLEX_OPS,
            f"needs TensorFlow ops that TFLite builtins lack ({', '.join(needed)}); "
            "set allow_flex = true to ship a Flex model (bigger runtime), or replace the "
            "ops (e.g. pseudo_ops = [\"erf\"] for exact GELU)", ops=tuple(needed))
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines() or [""]
    return ConversionError(FailureKind.TFLITE_ERROR, f"TFLiteConverter ({label}): {type(exc).__name__}: {lines[0].strip()}")
