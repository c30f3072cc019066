"""A TFLite file run on inputs in PyTorch's layout, on every side that runs one: the child's
verification, the deploy process that never imports TensorFlow, and the cache's proof of a restored
entry (numpy and the TFLite runtime only).

Inputs are mapped by signature name and put into the layout onnx2tf chose; a file that takes
integers (an `int8_io` deliverable) gets them quantized with its own scale and zero point, and its
integer outputs are dequantized, so every recipe is compared with PyTorch in the same units.
"""
from __future__ import annotations

import numpy as np


def interpreter(model: bytes | str, threads: int = 1, *, reference_kernels: bool = False):
    """XNNPACK where it applies (the runtime's default, what a phone runs), or the reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    options = {"num_threads": threads}
    if reference_kernels:
        options["experimental_op_resolver_type"] = OpResolverType.BUILTIN_REF
    if isinstance(model, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model), **options)
    return Interpreter(model_path=str(model), **options)


def _scale(details) -> tuple[float, int] | None:
    q = details.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    if details["dtype"] in (np.int8, np.uint8, np.int16) and scales is not None and len(scales) == 1:
        return float(scales[0]), int(zeros[0])
    return None


def quantize(array: np.ndarray, details) -> np.ndarray:
    """A float input in the integer form the file takes (round to nearest, saturate)."""
    found = _scale(details)
    if found is None or array.dtype.kind != "f":
        return np.ascontiguousarray(array.astype(details["dtype"], copy=False))
    scale, zero = found
    info = np.iinfo(details["dtype"])
    q = np.clip(np.round(array.astype(np.float64) / scale + zero), info.min, info.max)
    return np.ascontiguousarray(q.astype(details["dtype"]))


def dequantize(array: np.ndarray, details) -> np.ndarray:
    found = _scale(details)
    if found is None:
        return array
    scale, zero = found
    return ((array.astype(np.float32) - zero) * scale).astype(np.float32)


def run_signature(runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The serving signature on float inputs keyed by signature name (TF layout): quantized where the
    file takes integers, its outputs dequantized."""
    inputs = runner.get_input_details()
    result = runner(**{key: quantize(a, inputs[key]) if key in inputs else a for key, a in feed.items()})
    outputs = runner.get_output_details()
    return {key: dequantize(a, outputs[key]) if key in outputs else a for key, a in result.items()}


def tf_layout_feed(saved, arrays) -> dict[str, np.ndarray]:
    """Sample inputs in PyTorch's layout, keyed and laid out as the TFLite signature takes them."""
    return {key: np.ascontiguousarray(np.transpose(a, perm))
            for (_, key), perm, a in zip(saved.input_names, saved.input_perms, arrays)}


class OutputsMismatch(ValueError):
    """The file's outputs are not the ones its signature map expects: its outputs are not the model's."""


def run_sets(model: bytes | str, saved, sets, threads: int = 1) -> list[list[np.ndarray]]:
    """The file on each set of sample inputs (PyTorch's layout), its interpreter built once (a large
    model's takes longer to build than to run): per set, its outputs in the map's order, in the
    file's layout (`torch_layout` puts them back). `saved`: the engine's map of the signature
    (a SavedModelResult or LiteRTResult)."""
    runner = interpreter(model, threads).get_signature_runner("serving_default")
    keys = [key for _, key in saved.output_names]
    found = []
    for arrays in sets:
        result = run_signature(runner, tf_layout_feed(saved, arrays))
        if sorted(result) != sorted(keys):
            raise OutputsMismatch(f"TFLite outputs {sorted(result)} do not match the expected {keys}")
        found.append([result[key] for key in keys])
    return found


def torch_layout(outputs, perms) -> list[np.ndarray]:
    """Outputs in the layout the file gives them, put back into PyTorch's (`perms`: the engine's)."""
    return [np.transpose(out, np.argsort(perm)) for out, perm in zip(outputs, perms)]


def stacked(per_set: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output over several sample sets, stacked along its batch axis (a 0-D output along a new one)."""
    if len(per_set) == 1:
        return per_set[0]
    return [np.concatenate([np.atleast_1d(o) if o.ndim == 0 else o for o in outputs], axis=0)
            for outputs in zip(*per_set)]
