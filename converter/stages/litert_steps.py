"""The litert engine's step (child side, in the litert-torch environment): the PyTorch model converted
by litert-torch (torch.export -> StableHLO -> a TFLite flatbuffer; no ONNX, no TensorFlow), written as
the float32 file, then each quantized recipe made from that file by ai-edge-quantizer (no second
conversion: the LSTM models this engine exists for take a minute to lower).

The files keep PyTorch's layout (an NCHW input stays NCHW) and its signature is `serving_default`
with inputs `args_0`, ... and outputs `output_0`, ... in the model's order. A recipe the engine cannot
build is recorded as a Refusal, one line, and the other recipes are built (as onnx2tf's TFLite stage
does); the shared rows then verify every file against PyTorch and run it where it goes.

Recipes, by ai-edge-quantizer's own recipes:
- fp32: litert-torch's file as it is;
- fp16: float16 weights (`FLOAT_CASTING`, weight-only: the CPU computes in float32);
- drq: `dynamic_wi8_afp32` (int8 weights, float activations);
- int8_io: `static_wi8_ai8`, calibrated on the calibration samples: its file takes and gives int8;
- int8 (float inputs and outputs around int8 ops): no recipe of ai-edge-quantizer keeps float
  inputs and outputs, so it is refused, saying to ask for int8_io.
"""
from __future__ import annotations

import dataclasses
import gc
import sys
import time
import traceback
from pathlib import Path

from ..failures import ConversionError, FailureKind, reraise_if_memory, stage_step
from ..protocol import write_bytes_atomic
from ..recipes import FP32, RECIPES, calibrated
from ..results import Deliverable, LiteRTResult, Refusal, TFLiteResult
from .checkpoint import Checkpoint, Context
from .memory import release_memory
from .tflite import tflite_path

SIGNATURE = "serving_default"
INT8_REFUSAL = ("ai-edge-quantizer's static int8 recipe gives the file int8 inputs and outputs; ask for "
                "int8_io (the same file) instead")


def convert(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The float32 file from the model itself, then every requested recipe from it."""
    start = time.perf_counter()
    module, source = _module(cp)
    args = tuple(_tensor(a) for a in cp.samples.inputs)
    with stage_step(FailureKind.TFLITE_ERROR, "litert-torch could not convert the model"):
        import litert_torch

        edge = litert_torch.convert(module, args)
        float_path = tflite_path(ctx.artifacts, FP32)
        edge.export(str(float_path))
    del edge
    cp = dataclasses.replace(cp, loaded=None)  # nothing after this needs the PyTorch model
    release_memory()
    signature = _signature(float_path, cp.input_names, cp.output_names)
    litert = LiteRTResult(source, *signature, seconds=round(time.perf_counter() - start, 3))
    files, refused = _recipes(ctx, cp, float_path, litert)
    if FP32 not in ctx.spec.deliverables:
        float_path.unlink(missing_ok=True)  # only what was asked for is kept (the explain step has none to build)
    if not files:
        raise ConversionError(FailureKind.TFLITE_ERROR, f"litert: no requested recipe could be built "
                                                        f"({refused[0].describe()})")
    used = calibrated(ctx.spec.deliverables)
    tfl = TFLiteResult(flex_ops=(), seconds=round(time.perf_counter() - start, 3),
                       calibration=cp.calibration_note if used else None,
                       random_calibration=cp.random_calibration and used, refused=tuple(refused))
    return dataclasses.replace(cp, litert=litert, tflite=tfl, deliverables=tuple(files))


def _module(cp: Checkpoint):
    """The loaded model as an nn.Module litert-torch takes (outputs flattened where the model returns a
    structure), and what it was made from. A TorchScript file is turned into an ExportedProgram first
    (TS2EPConverter: a graph with control flow, `prim::If`, is refused there, in one line)."""
    import torch

    from .model_outputs import FlatOutputs

    loaded = cp.loaded
    if loaded.format == "exported_program":
        module, source = loaded.module.module(), "ExportedProgram"
    elif loaded.format == "torchscript":
        with stage_step(FailureKind.TFLITE_ERROR, "TorchScript could not be turned into an ExportedProgram"):
            from torch._export.converter import TS2EPConverter

            args = tuple(_tensor(a) for a in cp.samples.inputs)
            module, source = TS2EPConverter(loaded.module, args).convert().module(), "TorchScript via TS2EPConverter"
    else:
        module, source = loaded.module, "nn.Module"
    module = FlatOutputs(module) if cp.flatten else module
    if isinstance(module, torch.nn.Module) and not isinstance(module, torch.fx.GraphModule):
        module = module.eval()
    return module, source


def _tensor(array):
    import torch

    return torch.from_numpy(array)


def _signature(path: Path, input_names, output_names):
    """The file's serving signature, checked against the model's inputs and outputs: keys in order
    (args_<i>, output_<i>), identity layouts. A file whose signature lacks one is the engine's error."""
    from ..tflite_run import interpreter

    runner = interpreter(str(path)).get_signature_runner(SIGNATURE)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    in_keys, out_keys = [f"args_{i}" for i in range(len(input_names))], [f"output_{i}" for i in range(len(output_names))]
    if sorted(ins) != sorted(in_keys) or sorted(outs) != sorted(out_keys):
        raise ConversionError(FailureKind.SHAPE_MISMATCH,
                              f"litert: the file's signature has inputs {sorted(ins)} and outputs {sorted(outs)}, the "
                              f"model {len(input_names)} inputs and {len(output_names)} outputs")
    return (tuple(zip(input_names, in_keys)), tuple(tuple(range(len(ins[k]["shape"]))) for k in in_keys),
            tuple(zip(output_names, out_keys)), tuple(tuple(range(len(outs[k]["shape"]))) for k in out_keys))


def _recipes(ctx: Context, cp: Checkpoint, float_path: Path, litert: LiteRTResult):
    """Each requested recipe's file made from the float32 one; (files, refusals)."""
    files, refused = [], []
    for label in ctx.spec.deliverables:
        if label == FP32:
            files.append(Deliverable(label, str(float_path), float_path.stat().st_size))
            continue
        try:
            model = _quantized(label, float_path, _calibration(cp, litert) if RECIPES[label].calibrated else ())
        except Exception as exc:
            reraise_if_memory(exc)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"--- {RECIPES[label].label} could not be built by litert: {reason}", file=sys.stderr)
            if not isinstance(exc, _Refused):
                traceback.print_exception(exc)
            refused.append(Refusal(label, f"litert: {reason}"))
            continue
        path = tflite_path(ctx.artifacts, label)
        write_bytes_atomic(path, model)
        files.append(Deliverable(label, str(path), len(model)))
        del model
        gc.collect()
    return files, refused


class _Refused(Exception):
    """A recipe this engine has no route for: its reason is the whole story (no traceback)."""


def _calibration(cp: Checkpoint, litert: LiteRTResult) -> list[dict]:
    """The calibration samples keyed by signature input (PyTorch's layout is the file's)."""
    return [{key: arrays[i] for i, (_, key) in enumerate(litert.input_names)} for arrays in cp.samples.calibration_sets]


def _quantized(label: str, float_path: Path, calibration) -> bytes:
    """A recipe's file from the float32 one, by ai-edge-quantizer."""
    from ai_edge_quantizer import qtyping, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if label == "int8":
        raise _Refused(INT8_REFUSAL)
    if label == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
        chosen = manager.get_quantization_recipe()
    elif label == "drq":
        chosen = recipe.dynamic_wi8_afp32()
    elif label == "int8_io":
        if not calibration:
            raise _Refused("needs calibration samples")
        chosen = recipe.static_wi8_ai8()
    else:
        raise _Refused(f"no route for the {label} recipe")
    quant = quantizer.Quantizer(float_model=str(float_path))
    quant.load_quantization_recipe(chosen)
    ranges = quant.calibrate({SIGNATURE: list(calibration)}) if calibration else None
    return bytes(quant.quantize(ranges).quantized_model)
