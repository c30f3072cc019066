"""Per-layer quantization errors (child side): a quantized TFLite file against the float32 file of the
same model, layer by layer, on the verification inputs (what TensorFlow's QuantizationDebugger shows
by hand, for any recipe).

Both files are run with every intermediate tensor kept, on the runtime's own kernels (XNNPACK would
fuse them away). A layer is an op that is not a QUANTIZE / DEQUANTIZE; its output is compared with
the float32 file's same layer (paired in order: the converter emits the same layers in the same
order for every recipe, the quantized recipes adding only QUANTIZE / DEQUANTIZE around them).

A layer's error is its output's RMS error relative to each channel's own spread, averaged over the
channels, along the axis where it is worst: a channel far larger than the rest, the usual cause of
a coarse int8 grid, would otherwise hide the channels it ruins. What a layer adds is its error less the largest
error among its inputs: the ranking the repair (repair.py) keeps layers in float32 by.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..results import LayerError

PLUMBING = {"QUANTIZE", "DEQUANTIZE"}  # ops that only change a tensor's type, never a layer of the model
TOP = 10  # layers kept in a record's report (the file may have hundreds)


@dataclass(frozen=True)
class Op:
    index: int
    name: str  # CONV_2D, ...
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """A file's ops and tensors as the runtime reads them."""

    ops: tuple[Op, ...]
    tensors: dict[int, dict]  # by tensor index (the runtime may leave out a tensor it cannot describe)
    inputs: frozenset[int] = frozenset()  # the model's input tensors

    @property
    def layers(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if op.name not in PLUMBING)

    def producer(self) -> dict[int, Op]:
        return {t: op for op in self.ops for t in op.outputs}


def _interpreter(path: str, threads: int):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return Interpreter(model_path=path, num_threads=threads, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def read_graph(interpreter) -> Graph:
    ops = tuple(Op(d["index"], d["op_name"], tuple(int(i) for i in d["inputs"]), tuple(int(i) for i in d["outputs"]))
                for d in interpreter._get_ops_details() if d["op_name"] != "DELEGATE")
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    return Graph(ops, tensors, frozenset(d["index"] for d in interpreter.get_input_details()))


def pair_layers(float_graph: Graph, quant_graph: Graph) -> list[tuple[Op, Op]]:
    """Each layer of the quantized file with the float32 file's same layer, or [] when the two do not
    have the same layers in the same order (nothing is then compared)."""
    mine, theirs = quant_graph.layers, float_graph.layers
    if [op.name for op in mine] != [op.name for op in theirs]:
        return []
    return list(zip(mine, theirs))


class _Spread:
    """Running sums of a float32 tensor and of its quantized twin's squared difference, per index of each
    axis (over the other axes and the inputs): a layer's error is judged along the axis where it is
    worst, since a layer's channels may be on any axis (channels-last images, a detector head's
    [N, 4 + C, anchors], a transformer's tokens)."""

    def __init__(self):
        self.n = 0
        self.sums: dict[int, list] = {}

    def add(self, exact: np.ndarray, found: np.ndarray) -> None:
        exact = np.atleast_1d(exact).astype(np.float64)
        found = found.astype(np.float64).reshape(exact.shape)
        diff2 = (found - exact) ** 2
        for axis in range(exact.ndim):
            others = tuple(a for a in range(exact.ndim) if a != axis)
            parts = [exact.sum(others), (exact ** 2).sum(others), diff2.sum(others), exact.size // exact.shape[axis]]
            if axis in self.sums:
                self.sums[axis] = [a + b for a, b in zip(self.sums[axis], parts)]
            else:
                self.sums[axis] = parts
        self.n += 1

    def error(self) -> float:
        """The worst axis's mean over its indices of RMS error / that index's spread (a floor of a
        thousandth of the typical spread keeps a constant index from dividing by zero)."""
        worst = 0.0
        for total, total2, diff2, count in self.sums.values():
            n = count * self.n
            spread = np.sqrt(np.maximum(total2 / n - (total / n) ** 2, 0.0))
            floor = max(float(np.sqrt(np.mean(spread ** 2))) * 1e-3, 1e-12)
            worst = max(worst, float(np.mean(np.sqrt(diff2 / n) / np.maximum(spread, floor))))
        return worst


def _value(interpreter, details: dict) -> np.ndarray:
    from ..tflite_run import dequantize

    return dequantize(interpreter.get_tensor(details["index"]), details)


def layer_errors(float_path: str, quant_path: str, feeds: list[dict[str, np.ndarray]],
                 threads: int = 1) -> tuple[LayerError, ...]:
    """Every layer of `quant_path` against `float_path` over `feeds` (inputs keyed by signature name,
    TF layout), the ones adding most error first; () when the files' layers do not pair."""
    from ..tflite_run import run_signature

    exact_it, quant_it = _interpreter(float_path, threads), _interpreter(quant_path, threads)
    exact_g, quant_g = read_graph(exact_it), read_graph(quant_it)
    pairs = pair_layers(exact_g, quant_g)
    if not pairs:
        return ()
    spreads = {q.index: _Spread() for q, _ in pairs}
    runners = [it.get_signature_runner("serving_default") for it in (exact_it, quant_it)]
    for feed in feeds:
        for runner in runners:
            run_signature(runner, feed)
        for q, f in pairs:
            exact = _value(exact_it, exact_g.tensors[f.outputs[0]])
            found = _value(quant_it, quant_g.tensors[q.outputs[0]])
            if exact.shape == found.shape and exact.size:
                spreads[q.index].add(exact, found)
    errors = {q: s.error() for q, s in spreads.items() if s.n}
    producer = quant_g.producer()

    def upstream(tensor: int) -> float:  # the error a layer's input carries in (through QUANTIZE/DEQUANTIZE)
        op = producer.get(tensor)
        while op is not None and op.name in PLUMBING:
            op = producer.get(op.inputs[0])
        return errors.get(op.index, 0.0) if op is not None else 0.0

    found = []
    for op, f in pairs:
        if op.index not in errors:
            continue
        error = errors[op.index]
        weights = _int8_weights(quant_g, op, producer)  # a DRQ layer may read them through a DEQUANTIZE
        carried = max((upstream(t) for t in op.inputs if t >= 0 and t in producer), default=0.0)
        found.append(LayerError(name=exact_g.tensors[f.outputs[0]]["name"], op=op.name, error=round(error, 6),
                                own=round(max(error - carried, 0.0), 6),
                                quantized=_runs_quantized(quant_g, op) or weights > 0, weights=weights))
    return tuple(sorted(found, key=lambda e: (-e.own, -e.error)))


def _int8_weights(graph: Graph, op: Op, producer: dict[int, Op]) -> int:
    """The integer weight elements the op reads: its constant integer inputs, or the integer constants a
    DEQUANTIZE turns into its float inputs (what keeping it in float32 takes out of the quantized share)."""
    total = 0
    for t in op.inputs:
        source = producer.get(t)
        if source is not None and source.name == "DEQUANTIZE" and source.inputs[0] not in producer:
            t = source.inputs[0]
        elif source is not None:
            continue
        if t < 0 or t in graph.inputs:  # the model's own input (an int8_io file's) is no weight
            continue
        details = graph.tensors.get(t)
        if details and details["dtype"] in (np.int8, np.int16) and len(details["quantization_parameters"]["scales"]):
            total += int(np.prod(details["shape"]))
    return total


def tensor_mb(path: str) -> float:
    """What the file's tensors take when every one is kept (its constants and activations, as allocated)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=path).get_tensor_details()
    return sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in details) / 2**20


def _runs_quantized(graph: Graph, op: Op) -> bool:
    """Whether the op takes or makes integer tensors (int8 weights under DRQ, int8 activations under int8)."""
    return any(graph.tensors.get(t, {}).get("dtype") in (np.int8, np.uint8, np.int16) for t in op.inputs + op.outputs)


def weight_elements(model: bytes) -> tuple[int, int]:
    """(quantized, float) elements of the file's constant tensors that an op reads as weights: int8 /
    int16 ones carrying a scale count as quantized, float32 / float16 ones as float; int32 shapes,
    axes and biases are neither."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model_t = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    quantized = floating = 0
    for graph in model_t.subgraphs:
        for tensor in graph.tensors:
            data = model_t.buffers[tensor.buffer].data if tensor.buffer < len(model_t.buffers) else None
            if data is None or not len(data):
                continue
            size = int(np.prod(tensor.shape)) if tensor.shape is not None and len(tensor.shape) else 1
            if tensor.type in (schema.TensorType.INT8, schema.TensorType.INT16) and tensor.quantization is not None \
                    and tensor.quantization.scale is not None and len(tensor.quantization.scale):
                quantized += size
            elif tensor.type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16):
                floating += size
    return quantized, floating
