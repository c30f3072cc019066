"""What a device sees of a TFLite file: each input and output as the file declares it (both sides;
numpy only).

PyTorch's shapes are not the device's: onnx2tf lays image inputs out channels-last (a
`[1, 1, 32, 32]` model takes `[1, 32, 32, 1]`), and an `int8_io` file takes and gives int8, whose
scale and zero point the firmware must apply itself. So each file's signature is read from the file
by the TFLite runtime, where the file is checked (stages/deploy.py, a process without TensorFlow),
kept on its Deliverable record (result.json, the cache, the reports), and read again when the cache
restores the file, which must declare the same.
"""
from __future__ import annotations

from dataclasses import dataclass

# PyTorch's axis names for image-like tensors of each rank; onnx2tf's permutation says where each went
TORCH_AXES = {3: "NCW", 4: "NCHW", 5: "NCDHW"}


@dataclass(frozen=True)
class TensorSignature:
    """One input or output of a TFLite file."""

    name: str                  # the serving signature's key ('image'): what a signature runner takes
    tensor: str                # the tensor's own name in the file ('serving_default_image:0')
    shape: tuple[int, ...]
    dtype: str                 # 'int8', 'float32', 'int64', ...
    layout: str = ""           # 'NHWC', 'NCHW', ...: an image-like tensor's axes; '' where the shape says it all
    scale: float | None = None        # a quantized tensor: real value = scale * (q - zero_point)
    zero_point: int | None = None

    def describe(self) -> str:
        text = " ".join(part for part in (self.name, str(list(self.shape)), self.layout, self.dtype) if part)
        if self.scale is not None:
            text += f" (scale {self.scale:.6g}, zero point {self.zero_point})"
        return text


@dataclass(frozen=True)
class Signature:
    """A file's inputs and outputs in the subgraph's order: TensorFlow Lite Micro, which has no
    signatures, addresses them by position (input(0), output(0), ...)."""

    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]

    def describe(self) -> str:
        return f"{side('input', self.inputs)}; {side('output', self.outputs)}"


def side(word: str, tensors) -> str:
    return f"{word}{'' if len(tensors) == 1 else 's'} {listed(tensors)}"


def listed(tensors) -> str:
    return ", ".join(t.describe() for t in tensors)


def layout_of(perm) -> str:
    """The axes of a tensor that onnx2tf permuted from PyTorch's by `perm` (TFLite = transpose(torch,
    perm)): 'NHWC' for a channels-last image. A 3-D tensor kept as PyTorch's may be a sequence, not
    channels and width, so it gets no name; nor does any other rank."""
    perm = tuple(perm)
    axes = TORCH_AXES.get(len(perm))
    if axes is None or sorted(perm) != list(range(len(perm))) or (len(perm) == 3 and perm == (0, 1, 2)):
        return ""
    return "".join(axes[i] for i in perm)


def layouts(saved) -> dict[str, str]:
    """Each signature key's layout, from the permutations onnx2tf chose (a SavedModelResult)."""
    pairs = list(zip(saved.input_names, saved.input_perms)) + list(zip(saved.output_names, saved.output_perms))
    return {key: layout_of(perm) for (_, key), perm in pairs}


def _tensor(details: dict, key: str, layout: str) -> TensorSignature:
    import numpy as np

    quantization = details.get("quantization_parameters") or {}
    scales, zeros = quantization.get("scales"), quantization.get("zero_points")
    quantized = scales is not None and len(scales) == 1 and float(scales[0]) != 0.0
    return TensorSignature(key, str(details["name"]), tuple(int(d) for d in details["shape"]),
                           np.dtype(details["dtype"]).name, layout, float(scales[0]) if quantized else None,
                           int(zeros[0]) if quantized else None)


def read(interpreter, layout_by_key: dict[str, str] | None = None) -> Signature:
    """The file's signature as the TFLite runtime reads it: tensors in the subgraph's order, named by
    the serving signature's keys (the tensor's own name where a file has no signature)."""
    layout_by_key = layout_by_key or {}
    runner = interpreter.get_signature_runner("serving_default") if interpreter.get_signature_list() else None
    keys_in = {d["index"]: k for k, d in runner.get_input_details().items()} if runner else {}
    keys_out = {d["index"]: k for k, d in runner.get_output_details().items()} if runner else {}

    def tensors(details, keys):
        named = [(d, keys.get(d["index"], str(d["name"]))) for d in details]
        return tuple(_tensor(d, key, layout_by_key.get(key, "")) for d, key in named)

    return Signature(tensors(interpreter.get_input_details(), keys_in),
                     tensors(interpreter.get_output_details(), keys_out))
