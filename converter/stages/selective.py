"""A quantized recipe rebuilt with chosen layers kept in float32 (child side), the layers named by their
output tensor in the float32 file (layers.py):

- int8 / int8_io: TensorFlow's own quantizer (`mlir_quantize`, what QuantizationDebugger calls) on
  the model calibrated once, with those layers denylisted: each rebuild costs milliseconds, the
  calibration one TFLite conversion;
- drq: TFLiteConverter has no denylist for dynamic-range quantization, so the DRQ file is edited:
  the kept layers' int8 weights are replaced by the float32 file's, and those layers run the float
  kernels (a DEQUANTIZE that fed one of them from int8 weights goes with them).

Both write a new file; verify.py judges it like any other.
"""
from __future__ import annotations

import copy
from typing import Callable

from ..recipes import RECIPES
from .layers import PLUMBING


def _model(data: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _bytes(model_t) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_t))


def _op_name(model_t, op) -> str:
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.opcode_to_name(model_t, op.opcodeIndex)


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def layer_pairs(mine, theirs) -> list[tuple[object, object]]:
    """The layers of two files of one model, paired in order (first subgraph); [] when they differ."""
    a = [op for op in mine.subgraphs[0].operators if _op_name(mine, op) not in PLUMBING]
    b = [op for op in theirs.subgraphs[0].operators if _op_name(theirs, op) not in PLUMBING]
    if [_op_name(mine, op) for op in a] != [_op_name(theirs, op) for op in b]:
        return []
    return list(zip(a, b))


def drq_keeping(drq: bytes, fp32: bytes, keep: set[str]) -> bytes:
    """The DRQ file with the layers in `keep` (float32 file's output names) on float32 weights."""
    from tensorflow.lite.python import schema_py_generated as schema

    model_t, float_t = _model(drq), _model(fp32)
    graph, float_graph = model_t.subgraphs[0], float_t.subgraphs[0]
    producer = {t: op for op in graph.operators for t in op.outputs}
    users: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            users[t] = users.get(t, 0) + 1
    dropped = []
    pairs = layer_pairs(model_t, float_t)
    _all_known(keep, {_name(float_graph.tensors[f.outputs[0]]) for _, f in pairs})
    for op, float_op in pairs:
        if _name(float_graph.tensors[float_op.outputs[0]]) not in keep:
            continue
        for position, t in enumerate(op.inputs):
            if t < 0 or position >= len(float_op.inputs) or float_op.inputs[position] < 0:
                continue
            source = producer.get(t)
            weights = t
            if source is not None and _op_name(model_t, source) == "DEQUANTIZE":
                weights = source.inputs[0]  # int8 weights dequantized once at load: float32 ones instead
            elif source is not None:
                continue  # an activation
            if graph.tensors[weights].type != schema.TensorType.INT8:
                continue
            exact = float_graph.tensors[float_op.inputs[position]]
            buffer = schema.BufferT()
            buffer.data = float_t.buffers[exact.buffer].data
            model_t.buffers.append(buffer)
            tensor = copy.deepcopy(exact)
            tensor.buffer = len(model_t.buffers) - 1
            graph.tensors.append(tensor)
            op.inputs[position] = len(graph.tensors) - 1
            users[t] -= 1
            if source is not None and users[t] == 0:
                dropped.append(source)
    graph.operators = [op for op in graph.operators if not any(op is d for d in dropped)]
    _drop_unused_weights(model_t)
    return _bytes(model_t)


def _drop_unused_weights(model_t) -> None:
    """Buffers no op reads any more are emptied, so the file does not carry both copies of a layer."""
    graph = model_t.subgraphs[0]
    used = {t for op in graph.operators for t in list(op.inputs) + list(op.outputs)}
    used |= set(graph.inputs) | set(graph.outputs)
    kept = {graph.tensors[t].buffer for t in used if t >= 0}
    for graph_ in model_t.subgraphs[1:]:
        kept |= {t.buffer for t in graph_.tensors}
    for i, tensor in enumerate(graph.tensors):
        if i not in used and tensor.buffer not in kept and tensor.buffer < len(model_t.buffers):
            model_t.buffers[tensor.buffer].data = None


def int8_keeping(calibrated: bytes, recipe: str, fp32: bytes) -> Callable[[set[str]], bytes]:
    """A builder of the `recipe` (int8 / int8_io) file with layers kept in float32, from the model
    calibrated once; the float32 file's layer names are translated to the calibrated model's."""
    import tensorflow as tf
    from tensorflow.lite.python import convert, lite

    mine, theirs = _model(calibrated), _model(fp32)
    names = {_name(theirs.subgraphs[0].tensors[f.outputs[0]]): _name(mine.subgraphs[0].tensors[c.outputs[0]])
             for c, f in layer_pairs(mine, theirs)}
    del mine, theirs  # object trees of two whole models: not kept for the rebuilds
    io_type = tf.int8 if RECIPES[recipe].integer_io else tf.float32

    def build(keep: set[str]) -> bytes:
        _all_known(keep, set(names))
        model = convert.mlir_quantize(calibrated, input_data_type=io_type, output_data_type=io_type,
                                      denylisted_nodes=sorted(names.get(n, n) for n in keep))
        return lite._deduplicate_readonly_buffers(model)  # as TFLiteConverter finishes its files

    return build


def _all_known(keep: set[str], known: set[str]) -> None:
    """A layer the rebuild cannot find would leave the file as it was, round after round: said at once."""
    unknown = sorted(keep - known)
    if unknown:
        raise ValueError(f"cannot keep '{unknown[0]}' in float32: the rebuilt model's layers do not pair with the "
                         "float32 file's")
